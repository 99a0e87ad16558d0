"""A real Milvus standalone server killed (SIGKILL) while a gallery enrols into it, then
started again on the same data: every acknowledged template is there, the client got
typed errors while the server was away, and the same gallery object works again without
being reopened."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from npcface.errors import GalleryUnavailableError
from npcface.gallery import Gallery

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.slow  # two server starts: about a minute and a half

DIM = 32


@pytest.fixture
def server(tmp_path: Path):
    from milvus_server import MilvusServer, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    srv = MilvusServer(tmp_path).start()
    try:
        yield srv
    finally:
        srv.stop()


def _vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal((1, DIM)).astype(np.float32)
    return v / np.linalg.norm(v)


def test_kill_during_enrolment_loses_no_acknowledged_template(server) -> None:
    uri = f"milvus://{server.address}/faults"
    gallery = Gallery.create(uri, dim=DIM)
    acked: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    down = threading.Event()
    failed_while_down = threading.Event()

    def enrol() -> None:
        i = 0
        while not stop.is_set():
            name = f"p{i}"
            try:
                acked[name] = gallery.add(name, _vector(i))
                i += 1
            except Exception as exc:  # noqa: BLE001 - collected and checked below
                errors.append(exc)
                if down.is_set():
                    failed_while_down.set()
                time.sleep(0.2)  # the same name again: it was not acknowledged

    writer = threading.Thread(target=enrol, daemon=True)
    writer.start()
    deadline = time.monotonic() + 120
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(acked) >= 15, errors[-1:] or "the writer made no progress"

    server.kill()
    down.set()
    assert failed_while_down.wait(60), "no error while the server was down"
    # a search while the server is down fails at once, with the typed error
    with pytest.raises(GalleryUnavailableError, match="retry later"):
        gallery.search(_vector(0)[0], k=1)
    n_before_restart = len(acked)

    server.start()
    down.clear()
    deadline = time.monotonic() + 180
    while len(acked) < n_before_restart + 15 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    writer.join(timeout=120)
    assert not writer.is_alive(), "the writer hung"
    assert len(acked) >= n_before_restart + 15, f"no enrolment after the restart: {errors[-1:]}"

    # every error the client saw is the typed one: nothing untyped leaked out of pymilvus
    assert errors and all(isinstance(e, GalleryUnavailableError) for e in errors), {
        type(e).__name__ for e in errors
    }

    # every acknowledged template is there, once, under its name, and found by search
    with Gallery.open(uri) as again:
        assert set(again.identities()) == set(acked)
        for name, ids in acked.items():
            assert sorted(again.templates(name)) == sorted(ids), name
        queries = np.concatenate([_vector(int(n[1:])) for n in acked])
        top = again.search(queries, k=1)
        assert [m[0].identity for m in top] == list(acked)
    gallery.close()
