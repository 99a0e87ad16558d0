"""npcface.fsutil: atomic replacement (readers never see a mix), nothing left behind on
failure, permissions as open() gives them."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from npcface.fsutil import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_writes_replace_and_leave_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two!")
    assert target.read_bytes() == b"two!"
    atomic_write_text(tmp_path / "t.txt", "café", durable=False)
    assert (tmp_path / "t.txt").read_bytes() == "café".encode()
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "j.json").read_text()
    assert json.loads(text) == {"a": [1.5, None], "b": 1} and text.endswith("\n")
    assert text.index('"a"') < text.index('"b"')  # sorted keys: stable files
    assert leftovers(tmp_path, {"f.bin", "t.txt", "j.json"}) == []


def test_permissions_are_those_of_open(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"x")
    mode = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == mode


def test_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path, {"model.onnx"}) == []
    with atomic_path(target) as tmp:  # a writer that wants a path
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as fh:
            fh.write(b"new")
    assert target.read_bytes() == b"new"


def test_readers_never_see_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "big"
    size = 1 << 20
    versions = [bytes([c]) * size for c in b"ab"]
    atomic_write_bytes(target, versions[0])
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        reads = 0
        while not stop.is_set() or reads == 0:
            data = target.read_bytes()
            reads += 1
            if data not in versions:
                bad.append(f"{len(data)} bytes, {sorted(set(data))[:4]}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(60):
        atomic_write_bytes(target, versions[i % 2], durable=False)
    stop.set()
    for t in threads:
        t.join()
    assert bad == []
    assert leftovers(tmp_path, {"big"}) == [] and os.path.getsize(target) == size
