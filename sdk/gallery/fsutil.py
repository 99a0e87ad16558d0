"""The gallery's writer lock. The durable-write helpers it used to hold are
:mod:`npcface.fsutil` (re-exported here for old imports)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..errors import GalleryBusyError, GalleryNotFoundError
from ..fsutil import atomic_write_bytes, fsync_dir, fsync_file

__all__ = ["WriterLock", "atomic_write_bytes", "fsync_dir", "fsync_file"]

try:  # POSIX only; elsewhere the writer lock is advisory-free
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_HELD: set[str] = set()
"""Gallery directories (real paths) this process holds the writer lock of."""
_HELD_GUARD = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child holds none of its parent's galleries
    os.register_at_fork(after_in_child=_HELD.clear)


class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``<gallery>/.lock``, held while a gallery is
    open for writing. The kernel drops it when the process dies, even on SIGKILL.

    Inside one process a second writable open of the same directory is refused by a
    process-wide registry (``flock`` alone would blame "another process").
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self._key = os.path.realpath(directory)
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            GalleryError: this process or another one holds it.
        """
        with _HELD_GUARD:
            if self._key in _HELD:
                raise GalleryBusyError(
                    f"{self.path.parent}: gallery is already open for writing in this process "
                    f"(pid {os.getpid()}); close the other Gallery object first (g.close() or "
                    "a with block), or open this one with readonly=True"
                )
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the directory went away (deleted) since it was found
                raise GalleryNotFoundError(f"{self.path.parent}: no gallery here") from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    try:
                        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                    finally:
                        os.close(fd)
                    where = "this process" if holder == str(os.getpid()) else "another process"
                    raise GalleryBusyError(
                        f"{self.path.parent}: gallery is open for writing in {where} "
                        f"(pid {holder}); close it there, or open this one with readonly=True"
                    ) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            self._pid = os.getpid()
            _HELD.add(self._key)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        with _HELD_GUARD:
            if self._fd is None:
                return
            _HELD.discard(self._key)
            try:
                # a forked child shares the parent's lock: closing its copy keeps the lock
                if fcntl is not None and self._pid == os.getpid():
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
