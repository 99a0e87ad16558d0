"""Durable, atomic file writes: readers see the old file or the new one, never a mix.

One recipe for every writer in npcface (gallery index and sidecar, prepared models,
exported artefacts, training checkpoints): write a temporary file in the same directory,
flush it to the disk, rename it over the target (atomic on POSIX and Windows), then flush
the directory so the rename itself survives a crash.

* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` for data
  in memory;
* :func:`atomic_path` for writers that want a path (``faiss.write_index``, ``onnx.save``,
  ``torch.save``): they write the temporary path, the rename happens on success only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames inside directory ``path`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block succeeds.

    The temporary file is removed if the block raises (``path`` is then untouched).

    Args:
        path: the file to (re)place; its directory must exist.
        durable: flush the file and the directory to the disk (off: atomic only, faster,
            for caches that can be rebuilt).

    Yields:
        The temporary path to write (a hidden name in the same directory, unique per call).

    Example::

        with atomic_path("index.faiss") as tmp:
            faiss.write_index(index, str(tmp))
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # created like open() would (0o666 less the umask), not mkstemp's owner-only 0o600
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", durable: bool = True
) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded (UTF-8 by default)."""
    atomic_write_bytes(path, text.encode(encoding), durable=durable)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 1, durable: bool = True
) -> None:
    """:func:`atomic_write_text` of ``data`` as JSON (keys sorted, a final newline).

    Raises:
        TypeError: ``data`` is not JSON-serialisable (nothing is written then).
    """
    text = json.dumps(data, indent=indent, sort_keys=True) + "\n"
    atomic_write_text(path, text, durable=durable)
