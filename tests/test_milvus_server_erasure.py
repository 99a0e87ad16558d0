"""Erasure at file level on a real Milvus standalone server (``milvus-server`` 2.3.5): after
``Gallery.remove`` and ``Gallery.compact``, no file of the server's data folder holds any
vector of the removed identity, under the server settings of ``ERASURE_CONFIG`` /
``ERASURE_ENV`` (tests/milvus_server.py), and the kept identities are still found. The scan
is checked first: it finds every vector of the identity in the files before the removal, so
a clean scan afterwards means something.

The scanner itself (no server) and Milvus Lite's refusal to compact are tested here too."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from npcface.errors import GalleryError, GalleryUnavailableError
from npcface.gallery import Gallery

sys.path.insert(0, str(Path(__file__).parent))

from milvus_server import (  # noqa: E402 - tests/ is not a package
    NEEDLE_BYTES,
    cosine_rows,
    describe,
    file_kind,
    scan_for,
)

DIM = 64
PER_ID = 40
HNSW = "HNSW:M=48,efConstruction=500"
"""An index that takes Milvus a few seconds to build (the slow test removes an identity
while it does)."""
ERASED_WITHIN_S = 240.0
"""How long the test waits for the last copy to go (bench/milvus_erasure.py: 14 to 34 s)."""


def _vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


# ------------------------------------------------------------------ the scanner, no server
def test_scan_finds_vectors_at_any_offset_across_chunks_and_in_zstd_frames(
    tmp_path: Path,
) -> None:
    import pyarrow as pa

    wanted = cosine_rows(_vectors(1, 6))
    # a vector of a repeating pattern: Zstandard stores it as 8 bytes and a match, so its
    # bytes are not in the compressed file as they are (random floats would be)
    wanted[2] = cosine_rows(np.tile(np.float32([1.0, 2.0]), DIM // 2)[None])[0]
    other = cosine_rows(_vectors(2, 3))
    noise = np.random.default_rng(3).bytes(5000)
    (tmp_path / "insert_log" / "1" / "2").mkdir(parents=True)
    (tmp_path / "rocksmq").mkdir()
    # vector 0 at an odd offset, vector 1 straddling the 4 KiB chunk boundary used below
    a = tmp_path / "insert_log" / "1" / "2" / "binlog"
    a.write_bytes(noise[:7] + wanted[0].tobytes() + noise[: 4096 - 7 - 256 - 20])
    with open(a, "ab") as fh:
        fh.write(wanted[1].tobytes() + noise)
    # vector 2 only inside a Zstandard frame, between other bytes
    # 300 kB of zeros in the middle: one of the frame's blocks is a run-length block
    content = noise[:50] + b"\0" * 300_000 + wanted[2].tobytes() + noise
    packed = pa.compress(content, codec="zstd", asbytes=True)
    assert wanted[2].tobytes()[:NEEDLE_BYTES] not in packed
    (tmp_path / "rocksmq" / "000012.sst").write_bytes(noise[:13] + packed + noise[:99])
    # vectors of another identity, and a needle one byte short: not hits
    (tmp_path / "etcd.data").mkdir()
    (tmp_path / "etcd.data" / "wal").write_bytes(
        other.tobytes() + wanted[3].tobytes()[: NEEDLE_BYTES - 1] + noise
    )
    hits = scan_for(tmp_path, wanted)
    found = {(h.path.name, h.vector, h.kind) for h in hits}
    assert found == {
        ("binlog", 0, "insert log"),
        ("binlog", 1, "insert log"),
        ("000012.sst", 2, "rocksmq (zstd frame)"),
    }, describe(hits)
    assert {h.offset for h in hits if h.vector == 0} == {7}
    assert {h.offset for h in hits if h.vector == 1} == {4096 - 20}
    assert {h.offset for h in hits if h.vector == 2} == {13}  # where the frame starts
    # read in 4 KiB chunks: the vector across the first boundary is found all the same
    chunked = scan_for(tmp_path / "insert_log", wanted, chunk_bytes=4096)
    assert {(h.vector, h.offset) for h in chunked} == {(0, 7), (1, 4096 - 20)}
    assert scan_for(tmp_path, cosine_rows(_vectors(4, 5))) == []


def test_scan_reads_parquet_payloads_such_as_milvus_index_files(tmp_path: Path) -> None:
    """An index file is a binlog whose Parquet payload holds the index one int8 per byte,
    dictionary-encoded and compressed: its vectors' bytes are nowhere as they are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    v = cosine_rows(_vectors(8, 3))
    blob = np.random.default_rng(9).bytes(3000) + v.tobytes() + b"\x01" * 500
    out = pa.BufferOutputStream()
    table = pa.table({"v": pa.array(np.frombuffer(blob, dtype=np.int8))})
    pq.write_table(table, out, use_dictionary=True, compression="zstd")
    payload = out.getvalue().to_pybytes()
    (tmp_path / "index_files" / "1").mkdir(parents=True)
    # an event header before the payload, another (broken) "PAR1" after it
    (tmp_path / "index_files" / "1" / "HNSW").write_bytes(
        b"\xbc\xfa\xff\x00" * 9 + payload + b"PAR1xx"
    )
    assert v.tobytes()[:NEEDLE_BYTES] not in payload
    hits = scan_for(tmp_path, v)
    assert {(h.vector, h.kind, h.offset) for h in hits} == {
        (i, "index file (parquet)", 36) for i in range(3)
    }, describe(hits)
    assert scan_for(tmp_path, v, exclude=("index_files",)) == []


def test_scan_survives_files_that_are_not_zstd_frames(tmp_path: Path) -> None:
    from milvus_server import ZSTD_MAGIC

    v = cosine_rows(_vectors(5, 1))
    # a magic number followed by garbage, and a truncated frame: skipped, the raw copy found
    (tmp_path / "f").write_bytes(ZSTD_MAGIC + b"\x00\xff" * 10 + v.tobytes() + ZSTD_MAGIC)
    assert [(h.vector, h.kind) for h in scan_for(tmp_path, v)] == [(0, "other")]


def test_file_kind_names_milvus_files() -> None:
    root = Path("/srv/milvus/data/data")
    assert file_kind(root / "insert_log/4/5/6/104/7") == "insert log"
    assert file_kind(root / "delta_log/4/5/6/7") == "delta log"
    assert file_kind(root / "stats_log/4/5/6/100/7") == "stats log"
    assert file_kind(root / "index_files/8/1/4/5/6/HNSW_0") == "index file"
    assert file_kind(root / "rocksmq/000020.sst") == "rocksmq"
    assert file_kind(root / "rocksmq_meta_kv/000016.log") == "rocksmq"
    assert file_kind(root / "etcd.data/member/wal/0.wal") == "etcd"
    assert file_kind(root / "../logs/standalone-1.log") == "other"


def test_server_settings_must_exist_in_the_template(tmp_path: Path) -> None:
    from milvus_server import ERASURE_CONFIG, MilvusServer, template_keys, why_not

    if why_not():
        pytest.skip(why_not())
    assert set(ERASURE_CONFIG) <= template_keys()
    with pytest.raises(KeyError, match="dataCoord.gc.intervall"):
        MilvusServer(tmp_path, config={"dataCoord.gc.intervall": 10})


# ------------------------------------------------------------------------- Milvus Lite
def test_milvus_lite_refuses_compact_and_keeps_removed_vectors_in_its_files(
    tmp_path: Path,
) -> None:
    pytest.importorskip("milvus_lite")
    pytest.importorskip("pymilvus")
    gone, kept = _vectors(6, 20), _vectors(7, 20)
    with Gallery.create(f"milvus-lite://{tmp_path / 'g.db'}", dim=DIM) as g:
        g.add("gone", gone)
        g.add("kept", kept)
        g.save()
        g.remove("gone")
        g.save()
        with pytest.raises(GalleryError, match="Milvus Lite cannot compact"):
            g.compact()
        # why it refuses rather than pretend: the removed vectors are still in its files
        assert {h.vector for h in scan_for(tmp_path, cosine_rows(gone))}, (
            "Milvus Lite no longer keeps removed vectors: revisit MilvusBackend.compact"
        )
        assert [m[0].identity for m in g.search(kept[:3], k=1)] == ["kept"] * 3


# ---------------------------------------------------------------------- a real server
@pytest.fixture
def server(tmp_path: Path):
    from milvus_server import ERASURE_CONFIG, ERASURE_ENV, MilvusServer, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    srv = MilvusServer(tmp_path, config=ERASURE_CONFIG, env=ERASURE_ENV).start()
    try:
        yield srv
    finally:
        srv.stop()


def _scan_until(server, vectors: np.ndarray, done, deadline_s: float):
    """Scan the server's files until ``done(hits)`` or the deadline; the last hits."""
    deadline = time.monotonic() + deadline_s
    while True:
        hits = server.scan(vectors)
        if done(hits) or time.monotonic() > deadline:
            return hits
        time.sleep(3)


@pytest.mark.slow  # a server start, HNSW builds, garbage collection: 2 to 3 minutes
def test_removed_identities_leave_no_vector_in_the_server_files(server, capsys) -> None:
    # HNSW (built on segments of 1024 rows or more): the index files hold the vectors too
    g = Gallery.create(f"milvus://{server.address}/erasure", dim=DIM, index=HNSW)
    first = {f"a{i:02d}": _vectors(100 + i, PER_ID) for i in range(30)}
    for name, vecs in first.items():
        g.add(name, vecs, metadata={"employee": name})
    g.save()
    gone = cosine_rows(first["a00"])

    # the scan sees them: every vector of the identity is in the flushed insert log and,
    # once built, in the index files
    def everywhere(hits) -> bool:
        return all(
            {h.vector for h in hits if h.kind.startswith(kind)} == set(range(PER_ID))
            for kind in ("insert log", "index file")
        )

    before = _scan_until(server, gone, everywhere, 180)
    assert everywhere(before), "the scan does not find the vectors:\n" + describe(before)

    assert g.remove("a00") == PER_ID
    report = g.compact()
    assert report.dropped is None and "server compacted" in report.detail  # it cannot count
    _assert_erased(server, gone)

    # removed right after enrolment, while Milvus still builds the new segment's index
    # (it leaves such segments out of a compaction): compact() waits for the index first
    second = {f"b{i:03d}": _vectors(1000 + i, PER_ID) for i in range(500)}
    g.add_many([n for n in second for _ in range(PER_ID)], np.concatenate(list(second.values())))
    g.save()
    gone2 = cosine_rows(second["b000"])
    flushed = scan_for(server.data_dir / "data" / "insert_log", gone2)
    assert {h.vector for h in flushed} == set(range(PER_ID)), describe(flushed)
    g.remove("b000")
    assert _pending_index_rows(server) > 0, "the index was built already: nothing tested"
    # through the CLI this time, as an operator would run it
    from npcface.cli import main

    assert main(["gallery", "compact", f"milvus://{server.address}/erasure"]) == 0
    assert "the server compacted the gallery's collections" in capsys.readouterr().out
    _assert_erased(server, gone2)

    # the kept identities are intact: found by search, and still in the files
    kept = {n: v for n, v in (first | second).items() if n not in ("a00", "b000")}
    assert len(g) == len(kept) and "a00" not in g and "b000" not in g
    names = list(kept)
    queries = np.concatenate([kept[n][:2] for n in names])
    assert [m[0].identity for m in g.search(queries, k=1)] == [n for n in names for _ in (0, 1)]
    left = server.scan(cosine_rows(kept["a01"]))
    assert {h.vector for h in left} == set(range(PER_ID))

    # a server that is away: the typed error, at once
    server.kill()
    with pytest.raises(GalleryUnavailableError):
        g.compact()
    g.close()


def _pending_index_rows(server) -> int:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=f"http://{server.address}")
    try:
        return int(client.describe_index("erasure", "vec")["pending_index_rows"])
    finally:
        client.close()


def _assert_erased(server, vectors: np.ndarray) -> None:
    hits = _scan_until(server, vectors, lambda h: not h, ERASED_WITHIN_S)
    assert not hits, (
        f"{ERASED_WITHIN_S:.0f} s after compact(), files still hold removed vectors:\n"
        + describe(hits)
    )
