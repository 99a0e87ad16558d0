"""A real Milvus standalone server for tests and benches: ``milvus-server`` of the PyPI
package ``milvus`` (Milvus 2.3 with embedded etcd and message queue), started on free
loopback ports in a folder of its own, stopped (and killable) on demand.

Several can run on one machine: the embedded etcd would take peer port 2380 whatever the
package's flags say (a second server's etcd then fails and Milvus panics in
``GetEmbedEtcdClient``), so each server gets an etcd configuration of its own with free
loopback ports, passed as Milvus's ``ETCD_CONFIG_PATH`` (the environment form of
``etcd.config.path``, which the package's ``milvus.yaml`` template lacks).

:data:`ERASURE_CONFIG` is the server configuration under which a deleted identity's vectors
leave every file of the data folder after an explicit compaction, and :func:`scan_for`
finds vectors' bytes in those files (``tests/test_milvus_server_erasure.py``,
``bench/milvus_erasure.py``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PORTS = (
    "etcd-port",
    "root-coord-port",
    "proxy-port",
    "proxy-internal-port",
    "query-coord-port",
    "query-node-port",
    "index-coord-port",
    "index-node-port",
    "data-coord-port",
    "data-node-port",
)


ERASURE_CONFIG: dict[str, str | int] = {
    # the explicit compaction (Gallery.compact) is the one that runs: an automatic one
    # started in between may hold the segments and leave the explicit one nothing to do
    "dataCoord.compaction.enableAutoCompaction": "false",
    # the garbage collector removes the compacted-away segments' binlogs: it runs every
    # 10 s, a file whose metadata is gone is removed after 30 s, a dropped segment's after
    # 60 s (5 s tolerances made 2.3.5 panic in compaction, see sdk/gallery/README.md)
    "dataCoord.gc.interval": 10,
    "dataCoord.gc.missingTolerance": 30,
    "dataCoord.gc.dropTolerance": 60,
    # the data node syncs (flushes) buffered rows and deletes every 5 s
    "dataNode.segment.syncPeriod": 5,
    # rocksmq: small pages, so that the page holding the inserts is closed and can expire;
    # a 30 s retention; a RocksDB compaction every 15 s that drops the expired pages
    "rocksmq.rocksmqPageSize": 4096,
    "rocksmq.retentionTimeInMinutes": 0.5,
    "rocksmq.compactionInterval": 15,
    # no compression at any RocksDB level: the scan must see the raw bytes, or its "gone"
    # would prove nothing
    "rocksmq.compressionTypes": "[0, 0, 0, 0, 0]",
}
"""Settings of ``milvus.yaml`` (dotted keys, all present in the 2.3.5 package's template)
for file-level erasure, with :data:`ERASURE_ENV`: after ``delete``, ``flush`` and a
completed compaction (``Gallery.compact``), no byte of a removed vector is left in any file
of the server's data folder once garbage collection and the message queue's retention have
run (measured in docs/scale-out.md)."""

ERASURE_ENV: dict[str, str] = {"ROCKSMQ_TIMTICKERINTERVAL": "5"}
"""The rest of the erasure settings, as environment: ``rocksmq.timtickerInterval`` (sic),
how often rocksmq looks for expired pages (default 600 s), is read by Milvus 2.3.5 but absent
from the package's template, so ``--extra-config`` cannot set it."""


def why_not() -> str | None:
    """Why no server can be started here (None when it can)."""
    if importlib.util.find_spec("milvus") is None or shutil.which("milvus-server") is None:
        return "the Milvus server is not installed: pip install milvus (CI installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusServer:
    """``milvus-server`` with its data in ``folder``; :attr:`address` is ``host:port``."""

    def __init__(
        self,
        folder: Path,
        start_timeout_s: float = 240.0,
        config: Mapping[str, str | int | float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``config``: settings of Milvus's ``milvus.yaml`` by dotted key (``--extra-config``),
        e.g. ``{"dataCoord.gc.interval": 5}``; each key must exist in the package's template
        (the launcher silently ignores others: :class:`KeyError` here instead). ``env``: extra
        environment of the server (Milvus also reads settings as ``SECTION_KEY`` variables)."""
        self.folder = Path(folder)
        self.config = dict(config or {})
        unknown = sorted(set(self.config) - template_keys()) if self.config else []
        if unknown:
            raise KeyError(f"not in the milvus package's milvus.yaml template: {unknown}")
        self.env = dict(env or {})
        self.ports = {name: _free_port() for name in PORTS}
        self.address = f"127.0.0.1:{self.ports['proxy-port']}"
        self.start_timeout_s = start_timeout_s
        self.etcd_peer_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _etcd_config(self) -> Path:
        """The embedded etcd's own configuration: this server's data folder and loopback
        ports (the same ones on every start, as etcd keeps its member's peer address)."""
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.ports['etcd-port']}"
        path = self.folder / "embedEtcd.yaml"
        path.write_text(
            "name: default\n"
            f"data-dir: {self.folder / 'data' / 'data' / 'etcd.data'}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
        )
        return path

    def start(self) -> MilvusServer:
        cmd = ["milvus-server", "--data", str(self.folder / "data")]
        for name, port in self.ports.items():
            cmd += [f"--{name}", str(port)]
        for key, value in self.config.items():
            cmd += ["--extra-config", f"{key}={value}"]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        # a session of its own: the launcher starts the milvus binary as its child, and a
        # kill must take both
        env = dict(os.environ, ETCD_CONFIG_PATH=str(self._etcd_config()), **self.env)
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"milvus-server did not start; see {self.folder / 'server.log'}")
            time.sleep(0.5)
        return self

    @property
    def data_dir(self) -> Path:
        """The server's folder (``--data``): ``data/`` (local storage: binlogs, index files;
        rocksmq; etcd), ``logs/``, ``configs/``, and ``bin/``, the server's program that the
        launcher copies there from the package."""
        return self.folder / "data"

    def scan(self, vectors: np.ndarray) -> list[Hit]:
        """:func:`scan_for` over every file the server writes: its whole folder but ``bin/``
        (250 MB of program files copied from the package, which the server never writes)."""
        return scan_for(self.data_dir, vectors, exclude=("bin",))

    def _answers(self) -> bool:
        from pymilvus import MilvusClient

        try:
            with socket.create_connection(("127.0.0.1", self.ports["proxy-port"]), timeout=1):
                pass
            client = MilvusClient(uri=f"http://{self.address}", timeout=5)
            client.list_collections()
            client.close()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the launcher and the server, as a crash (the data folder stays)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
            self.kill()  # whatever of the group is left

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def template_keys() -> set[str]:
    """Every dotted key of the ``milvus`` package's ``milvus.yaml`` template (what
    ``--extra-config`` can set), read as the launcher reads it: a ``key:`` line nested by
    two spaces per level."""
    import re

    import milvus

    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    keys: set[str] = set()
    path: list[str] = []
    for line in template.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            continue
        m = re.match(r"^( *[a-zA-Z0-9_]+):", line)
        if not m:
            continue
        key = m.group(1).strip()
        level = (len(m.group(1)) - len(key)) // 2
        path = [*path[:level], key]
        keys.add(".".join(path))
    return keys


# ------------------------------------------------------------------------- the file scan
NEEDLE_BYTES = 32
"""How much of a vector is looked for: its first 32 bytes (8 float32, little-endian), which
random unit vectors never share by chance."""


@dataclass(frozen=True)
class Hit:
    """A vector's bytes found in a file.

    Attributes:
        path: the file.
        vector: index of the vector (in the order given to :func:`scan_for`).
        offset: byte offset of the first occurrence.
        kind: what the file is (:func:`file_kind`).
    """

    path: Path
    vector: int
    offset: int
    kind: str

    def __str__(self) -> str:
        return f"vector {self.vector} at byte {self.offset} of {self.kind} {self.path}"


def file_kind(path: Path) -> str:
    """What a file of a ``milvus-server`` data folder is, from its path: ``insert log``,
    ``delta log``, ``stats log``, ``index file``, ``rocksmq`` (the message queue's RocksDB),
    ``etcd`` (metadata, its WAL and snapshots) or ``other``."""
    parts = Path(path).parts
    for folder, kind in (
        ("insert_log", "insert log"),
        ("delta_log", "delta log"),
        ("stats_log", "stats log"),
        ("index_files", "index file"),
        ("rocksmq", "rocksmq"),
        ("rocksmq_meta_kv", "rocksmq"),
        ("etcd.data", "etcd"),
    ):
        if folder in parts:
            return kind
    return "other"


def cosine_rows(vectors: np.ndarray) -> np.ndarray:
    """The float32 rows a ``cosine`` gallery stores for ``vectors`` (n, dim): the facade's
    normalisation with the same arithmetic, so their bytes are the stored bytes (normalising
    already unit rows again may change their last bits)."""
    rows = np.array(vectors, dtype=np.float32, order="C")
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def needles(vectors: np.ndarray) -> list[bytes]:
    """The byte strings :func:`scan_for` looks for: each row's first :data:`NEEDLE_BYTES`
    bytes as little-endian float32 (Milvus stores float vectors so)."""
    rows = np.ascontiguousarray(np.atleast_2d(vectors), dtype="<f4")
    return [row.tobytes()[:NEEDLE_BYTES] for row in rows]


def scan_for(
    folder: Path,
    vectors: np.ndarray,
    chunk_bytes: int = 1 << 30,
    exclude: Iterable[str] = (),
) -> list[Hit]:
    """Every file under ``folder`` (recursively; top-level entries named in ``exclude`` left
    out) that holds any of ``vectors`` (n, dim), each as little-endian float32, found by its
    first :data:`NEEDLE_BYTES` bytes at any byte offset; one :class:`Hit` per (file,
    vector), sorted by path. Files that vanish during
    the scan (the server removes them) are skipped. Files larger than ``chunk_bytes`` are
    read in chunks that overlap by a needle's length, so no raw occurrence across a boundary
    is missed (a Zstandard frame across one is not decoded: keep ``chunk_bytes`` above the
    largest file, as the 1 GiB default is for a test server).

    Each file is searched as it is, inside every Zstandard frame in it, and in the values
    of every Parquet file embedded in it (Milvus's binlogs and index files): a hit's
    :attr:`Hit.kind` says which, e.g. ``index file (parquet)``. One numpy pass per buffer
    for all vectors (:class:`_Finder`)."""
    finder = _Finder(needles(vectors))
    hits: list[Hit] = []
    skip = {Path(folder) / name for name in exclude}
    for path in sorted(_files(Path(folder))):
        if any(path.is_relative_to(d) for d in skip):
            continue
        found: dict[int, tuple[int, str]] = {}  # vector -> (offset, "" or the decoding)
        try:
            with open(path, "rb") as fh:
                base = 0  # file offset of data[0]
                data = b""
                while True:
                    chunk = fh.read(chunk_bytes)
                    if not chunk:
                        break
                    keep = data[-(NEEDLE_BYTES - 1) :] if data else b""
                    base += len(data) - len(keep)
                    data = keep + chunk
                    for i, at in finder.find(data).items():
                        found.setdefault(i, (base + at, ""))
                    for form, decoded in (("zstd frame", _zstd_frames), ("parquet", _parquet)):
                        for at, plain in decoded(data):
                            for i in finder.find(plain):
                                found.setdefault(i, (base + at, form))
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        kind = file_kind(path)
        hits.extend(
            Hit(path, i, at, f"{kind} ({form})" if form else kind)
            for i, (at, form) in sorted(found.items())
        )
    return hits


PARQUET_MAGIC = b"PAR1"


def _parquet(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(offset, the values' bytes) of every Parquet file embedded in ``data``.

    Milvus 2.3's binlogs and index files are events whose payloads are Parquet files: an
    insert log's vectors are a fixed-size binary column (their bytes may show as they are),
    but an index file is one ``int8`` value per byte, dictionary-encoded, so its bytes never
    show as they are. Each embedded file (``PAR1`` ... footer length, ``PAR1``) is read with
    pyarrow and the data buffers of all its columns are concatenated (values contiguous,
    as Milvus wrote them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    marks = []
    at = data.find(PARQUET_MAGIC)
    while at >= 0:
        marks.append(at)
        at = data.find(PARQUET_MAGIC, at + 1)
    done = -1
    for i, start in enumerate(marks):
        if start <= done:
            continue
        for end in marks[i + 1 :]:
            footer = int.from_bytes(data[end - 4 : end], "little")
            if start + 4 > end - 4 - footer:
                continue
            try:
                table = pq.read_table(pa.BufferReader(data[start : end + 4]))
            except (OSError, pa.ArrowException):
                continue
            yield (
                start,
                b"".join(
                    buf.to_pybytes()
                    for column in table.columns
                    for chunk in column.chunks
                    for buf in chunk.buffers()
                    if buf is not None
                ),
            )
            done = end
            break


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_frames(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(offset, decompressed content) of every complete Zstandard frame in ``data``.

    Milvus 2.3 compresses its binlogs' Parquet pages with Zstandard (no setting turns that
    off), and RocksDB may compress its blocks so: the scan looks inside them too, or a "not
    found" would prove nothing. A frame's end is found from its block headers
    (RFC 8878); a magic number that is not a frame start fails to parse or to decompress
    and is skipped."""
    import pyarrow as pa

    at = data.find(ZSTD_MAGIC)
    while at >= 0:
        end = _zstd_frame_end(data, at)
        if end is not None:
            try:
                stream = pa.CompressedInputStream(pa.BufferReader(data[at:end]), "zstd")
                yield at, stream.read()
            except (OSError, pa.ArrowException):
                pass
        at = data.find(ZSTD_MAGIC, at + 1)


def _zstd_frame_end(data: bytes, at: int) -> int | None:
    """The offset just past the Zstandard frame that starts at ``at``, or None when what
    is there is not a whole frame (RFC 8878, section 3.1.1)."""
    p = at + 4
    if p >= len(data):
        return None
    descriptor = data[p]
    p += 1
    fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
    if (descriptor >> 3) & 1:  # the reserved bit
        return None
    p += 0 if single else 1  # window descriptor
    p += (0, 1, 2, 4)[descriptor & 3]  # dictionary id
    p += (single, 2, 4, 8)[fcs_flag]  # frame content size
    while True:
        if p + 3 > len(data):
            return None
        header = int.from_bytes(data[p : p + 3], "little")
        p += 3
        block_type, size = (header >> 1) & 3, header >> 3
        if block_type == 3:  # reserved
            return None
        p += 1 if block_type == 1 else size  # an RLE block holds one byte
        if p > len(data):
            return None
        if header & 1:  # the last block
            break
    p += 4 if (descriptor >> 2) & 1 else 0  # content checksum
    return p if p <= len(data) else None


class _Finder:
    """Finds many :data:`NEEDLE_BYTES`-byte needles in a buffer in one numpy pass.

    An occurrence at any offset ``p`` covers the 8-byte-aligned word at ``p + r``,
    ``r = -p mod 8`` (0..7), which lies inside the needle: so the needles' 8-byte pieces at
    offsets 0..7 are the keys, only the buffer's aligned words are looked up (in a table of
    the keys' low bits, then exactly), and each candidate is compared in full."""

    TABLE_BITS = 22

    def __init__(self, wanted: list[bytes]) -> None:
        self.wanted = wanted
        self.keys: dict[int, list[tuple[int, int]]] = {}  # word -> [(needle, r)]
        for i, w in enumerate(wanted):
            for r in range(8):
                key = int.from_bytes(w[r : r + 8], "little")
                self.keys.setdefault(key, []).append((i, r))
        self.table = np.zeros(1 << self.TABLE_BITS, dtype=bool)
        for key in self.keys:
            self.table[key & ((1 << self.TABLE_BITS) - 1)] = True

    def find(self, data: bytes) -> dict[int, int]:
        """needle index -> first offset in ``data``."""
        out: dict[int, int] = {}
        count = len(data) // 8
        if not self.wanted or count == 0:
            return out
        low = np.frombuffer(data, dtype="<u4", count=2 * count)[0::2]  # low half of each word
        hit = self.table[low & np.uint32((1 << self.TABLE_BITS) - 1)]
        for k in np.flatnonzero(hit).tolist():
            word = int.from_bytes(data[8 * k : 8 * k + 8], "little")
            for i, r in self.keys.get(word, ()):
                at = 8 * k - r
                if (
                    at >= 0
                    and data[at : at + NEEDLE_BYTES] == self.wanted[i]
                    and at < out.get(i, at + 1)
                ):
                    out[i] = at
        return out


def _files(folder: Path) -> Iterable[Path]:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path


def describe(hits: list[Hit], limit: int = 20) -> str:
    """The hits grouped by file, for assertion messages."""
    by_file: dict[Path, list[int]] = {}
    for h in hits:
        by_file.setdefault(h.path, []).append(h.vector)
    lines = [f"{file_kind(p)}: {p} ({len(v)} vectors)" for p, v in list(by_file.items())[:limit]]
    if len(by_file) > limit:
        lines.append(f"... and {len(by_file) - limit} more files")
    return "\n".join(lines)
