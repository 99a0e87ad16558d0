"""insightface's RecordIO ``.rec`` / ``.idx`` data sets, read (and written) without mxnet.

Format (dmlc-core ``recordio`` + MXNet ``recordio.pack``), all little-endian:

- ``.idx``: text lines ``<key>\\t<byte offset in .rec>``.
- ``.rec``: a sequence of parts ``[magic u32 = 0xCED7230A][lrec u32][payload][pad to 4]``
  with ``lrec = cflag << 29 | length``. ``cflag`` 0 is a whole record; a record whose
  payload contains the magic number at a 4-byte aligned position is split there into parts
  flagged 1 (first), 2 (middle), 3 (last), and the reader puts the magic back between parts.
- a record's payload: ``IRHeader`` = struct ``<IfQQ`` (flag, label, id, id2), then, when
  ``flag > 0``, ``flag`` float32 labels, then the encoded image (JPEG/PNG).

insightface face data sets (``train.rec``/``train.idx``, with a ``property`` file
``num_classes,h,w``) put a header record at key 0 whose labels are
``[first identity record key, end key]``: image records are keys ``1 .. label[0] - 1``.
Without that header every key is an image. An image's class is its (first) label.

Only files you trust should be opened; nothing here unpickles anything.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import FaceDataset, decode_image

__all__ = [
    "IRHeader",
    "RecordIODataset",
    "RecordIOReader",
    "RecordIOWriter",
    "pack_record",
    "unpack_record",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


@dataclass(frozen=True)
class IRHeader:
    """MXNet image record header: ``flag`` = number of float labels after the header (0 =
    the single ``label``), ``label`` = float or float32 array, ``id``/``id2`` = record ids."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its header and the encoded image."""
    if len(record) < _IR.size:
        raise DataError(f"RecordIO record too short ({len(record)} bytes) for an image header")
    flag, label, id1, id2 = _IR.unpack_from(record)
    rest = record[_IR.size :]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise DataError("RecordIO record shorter than its label array")
        label = np.frombuffer(rest, np.float32, flag).copy()
        rest = rest[4 * flag :]
    return IRHeader(flag, label, id1, id2), rest


def pack_record(label: float | np.ndarray | list[float], image: bytes, id1: int = 0) -> bytes:
    """Record payload for ``image`` bytes with a scalar or array label (MXNet ``pack``)."""
    if np.ndim(label) == 0:
        return _IR.pack(0, float(label), id1, 0) + image
    arr = np.asarray(label, dtype=np.float32).ravel()
    return _IR.pack(arr.size, 0.0, id1, 0) + arr.tobytes() + image


class RecordIOWriter:
    """Writes an indexed RecordIO pair (for tests and conversions).

    Args:
        rec_path: the ``.rec`` file to create.
        idx_path: the ``.idx`` file to create.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(idx_path, "w", encoding="utf-8")  # noqa: SIM115

    def write_idx(self, key: int, record: bytes) -> None:
        """Append ``record`` under ``key``, splitting at aligned magic numbers like dmlc."""
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        n = len(record)
        if n >= 1 << 29:
            raise DataError("RecordIO records must be smaller than 512 MiB")
        start = 0
        for i in range(0, (n >> 2) << 2, 4):
            if record[i : i + 4] == _MAGIC_BYTES:
                flag = 1 if start == 0 else 2
                self._rec.write(_MAGIC_BYTES + struct.pack("<I", flag << 29 | (i - start)))
                self._rec.write(record[start:i])
                start = i + 4
        flag = 3 if start else 0
        self._rec.write(_MAGIC_BYTES + struct.pack("<I", flag << 29 | (n - start)))
        self._rec.write(record[start:])
        self._rec.write(b"\0" * (-(n - start) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordIOReader:
    """Random access to an indexed RecordIO file; safe in forked DataLoader workers
    (the file is reopened in each process).

    Args:
        rec_path: the ``.rec`` file.
        idx_path: its ``.idx`` (default: same stem, ``.idx``).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        for p in (self.rec_path, self.idx_path):
            if not p.is_file():
                raise DataError(f"RecordIO file not found: {p}")
        self.offsets: dict[int, int] = {}
        for no, line in enumerate(self.idx_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{self.idx_path}:{no}: expected '<key>\\t<offset>'")
            self.offsets[int(parts[0])] = int(parts[1])
        self.keys = list(self.offsets)
        self._fh = None
        self._pid = -1

    def _file(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for reads
            self._pid = os.getpid()
        return self._fh

    def read_idx(self, key: int) -> bytes:
        """The payload stored under ``key`` (parts joined back with the magic number)."""
        try:
            offset = self.offsets[key]
        except KeyError:
            raise DataError(f"key {key} not in {self.idx_path}") from None
        fh = self._file()
        fh.seek(offset)
        chunks: list[bytes] = []
        while True:
            head = fh.read(8)
            if len(head) != 8:
                raise DataError(f"{self.rec_path}: truncated record at key {key}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(f"{self.rec_path}: bad magic at key {key} (not a RecordIO file?)")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            data = fh.read((length + 3) & ~3)
            if len(data) < length:
                raise DataError(f"{self.rec_path}: truncated record at key {key}")
            chunks.append(data[:length])
            if cflag in (0, 3):
                break
            chunks.append(_MAGIC_BYTES)
        return b"".join(chunks)

    def read_header(self, key: int) -> IRHeader:
        """Only the image header of ``key`` (reads a few bytes unless the record is split)."""
        fh = self._file()
        fh.seek(self.offsets[key])
        head = fh.read(8 + _IR.size)
        if len(head) == 8 + _IR.size:
            magic, lrec = struct.unpack_from("<II", head)
            if magic == MAGIC and lrec >> 29 == 0 and (lrec & _LEN_MASK) >= _IR.size:
                flag = _IR.unpack_from(head, 8)[0]
                if flag == 0:
                    return unpack_record(head[8:])[0]
                more = fh.read(4 * flag)
                if (lrec & _LEN_MASK) >= _IR.size + 4 * flag and len(more) == 4 * flag:
                    return unpack_record(head[8:] + more)[0]
        return unpack_record(self.read_idx(key))[0]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fh"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class RecordIODataset(FaceDataset):
    """Face crops from insightface ``train.rec`` / ``train.idx``.

    Args:
        path: the ``.rec`` file, or a folder holding ``train.rec`` and ``train.idx``.
        size: crop side returned (insightface data sets are 112; others are resized).
        flip_prob: horizontal flip probability.
    """

    def __init__(self, path: str | Path, size: int = 120, flip_prob: float = 0.5) -> None:
        super().__init__(size, flip_prob)
        path = Path(path)
        rec = path / "train.rec" if path.is_dir() else path
        self.reader = RecordIOReader(rec)
        first = self.reader.keys[0] if self.reader.keys else None
        header = self.reader.read_header(0) if 0 in self.reader.offsets else None
        if header is not None and header.flag > 0:
            self.keys = np.arange(1, int(header.label[0]), dtype=np.int64)
        else:
            self.keys = np.asarray(self.reader.keys, dtype=np.int64)
        if first is None or len(self.keys) == 0:
            raise DataError(f"no image records in {rec}")
        labels = np.empty(len(self.keys), dtype=np.int64)
        for i, key in enumerate(self.keys.tolist()):  # headers only; the image is skipped
            lab = self.reader.read_header(key).label
            labels[i] = int(lab if np.ndim(lab) == 0 else lab[0])
        self.labels = labels

    def read(self, index: int) -> np.ndarray:
        key = int(self.keys[index])
        _, payload = unpack_record(self.reader.read_idx(key))
        return decode_image(payload, self.describe(index))

    def describe(self, index: int) -> str:
        return f"{self.reader.rec_path} key {int(self.keys[index])}"

    def fingerprint(self) -> str | None:
        import hashlib

        h = hashlib.sha256()
        for path in (Path(self.reader.rec_path), Path(self.reader.idx_path)):
            st = path.stat()
            h.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        h.update(self.keys.tobytes())
        return h.hexdigest()

    def _select(self, keep: np.ndarray) -> None:
        self.keys, self.labels = self.keys[keep], self.labels[keep]
