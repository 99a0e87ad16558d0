"""The galleries a service worker has open: readers that follow, one writer at a time.

A gallery is the directory ``<gallery_root>/<name>``. Reads use this worker's writable
handle when it holds one, else a read-only handle, which follows the writer's committed
changes by itself (every read checks SQLite's ``PRAGMA data_version`` first). Writes take the gallery's writer
lock (waiting up to ``writer_wait_s`` for another worker to give it back). With one worker
the lock is kept; with several, a worker gives it back after ``writer_idle_s`` without
writes, so the other workers can write too.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GalleryError
from .wire import ServiceError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DB_NAME = "gallery.db"
_BUSY = "open for writing in"  # another process (another worker) or, in tests, this one


def check_name(name: str) -> str:
    """A gallery name: 1-64 letters, digits, ``.``, ``_``, ``-``, not starting with a dot.

    Raises:
        ServiceError: ``invalid_argument``.
    """
    if not NAME_RE.match(name or ""):
        raise ServiceError(
            "invalid_argument",
            f"gallery name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            input="name",
        )
    return name


@dataclass
class _Handle:
    reader: Any = None
    writer: Any = None
    last_write: float = 0.0
    write_lock: threading.Lock = field(default_factory=threading.Lock)


class GalleryManager:
    """Open galleries under ``root`` by name. Thread-safe.

    Args:
        root: directory of galleries (created if missing).
        keep_writer: keep a writer lock once taken (one worker); else give it back when idle.
        writer_wait_s: how long to wait for another process's writer lock.
        writer_idle_s: idle seconds before a writer lock is given back (``keep_writer=False``).
    """

    def __init__(
        self,
        root: str | Path,
        keep_writer: bool = True,
        writer_wait_s: float = 10.0,
        writer_idle_s: float = 2.0,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_writer = keep_writer
        self.writer_wait_s = writer_wait_s
        self.writer_idle_s = writer_idle_s
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lookup
    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / DB_NAME).is_file()

    def names(self) -> list[str]:
        """Names of the galleries under the root, sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if NAME_RE.match(p.name) and (p / DB_NAME).is_file()
        )

    def require(self, name: str) -> str:
        """``name`` if such a gallery exists.

        Raises:
            ServiceError: ``gallery_not_found`` (404) or ``invalid_argument``.
        """
        if not self.exists(name):
            self._drop(name)
            raise ServiceError(
                "gallery_not_found",
                f"no gallery named {name!r}; create it with POST /v1/galleries",
                input=name,
            )
        return name

    def _handle(self, name: str) -> _Handle:
        with self._lock:
            return self._handles.setdefault(name, _Handle())

    # ---------------------------------------------------------------- reads and writes
    @contextmanager
    def reader(self, name: str) -> Iterator[Any]:
        """A gallery to read, caught up with every committed write."""
        from ..gallery import Gallery

        self.require(name)
        h = self._handle(name)
        writer = h.writer if self.keep_writer else None  # a kept writer is never closed
        if writer is not None:
            yield writer
            return
        with self._lock:
            if h.reader is None:
                h.reader = Gallery.open(self.path(name), readonly=True)
            reader = h.reader
        yield reader  # a read-only Gallery follows the writer's commits by itself

    @contextmanager
    def writer(self, name: str) -> Iterator[Any]:
        """The gallery open for writing by this worker (one write at a time per gallery).

        Raises:
            ServiceError: ``gallery_busy`` when another process kept the writer lock
                longer than ``writer_wait_s``.
        """
        self.require(name)
        h = self._handle(name)
        with h.write_lock:
            if h.writer is None:
                h.writer = self._open_writable(name)
            try:
                yield h.writer
            finally:
                h.last_write = time.monotonic()

    def _open_writable(self, name: str) -> Any:
        from ..gallery import Gallery

        deadline = time.monotonic() + self.writer_wait_s
        while True:
            try:
                return Gallery.open(self.path(name))
            except GalleryError as exc:
                if _BUSY not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise ServiceError(
                        "gallery_busy",
                        f"gallery {name!r} is being written by another process; retry later",
                        input=name,
                    ) from None
            time.sleep(0.02)

    def create(self, name: str, **options: Any) -> Any:
        """Create gallery ``name`` (options as :meth:`Gallery.create`); its info.

        Raises:
            ServiceError: ``gallery_exists`` (409).
        """
        from ..gallery import Gallery

        path = self.path(name)
        if self.exists(name):
            raise ServiceError("gallery_exists", f"gallery {name!r} exists already", input=name)
        h = self._handle(name)
        with h.write_lock:
            try:
                gallery = Gallery.create(path, **options)
            except GalleryError as exc:
                if "already exists" in str(exc):
                    raise ServiceError("gallery_exists", str(exc), input=name) from None
                raise
            info = gallery.info()
            if self.keep_writer:
                h.writer = gallery
                h.last_write = time.monotonic()
            else:
                gallery.close()
        return info

    def delete(self, name: str) -> None:
        """Delete gallery ``name`` and its files (waits for the writer lock first)."""
        h = self._handle(name)
        with self.writer(name) as gallery:
            gallery.close()
            h.writer = None
            if h.reader is not None:
                h.reader.close()
                h.reader = None
            shutil.rmtree(self.path(name))
        self._drop(name)

    def _drop(self, name: str) -> None:
        with self._lock:
            h = self._handles.pop(name, None)
        if h is None:
            return
        for g in (h.reader, h.writer):
            if g is not None:
                try:
                    g.close()
                except Exception:  # noqa: BLE001 - its files may be gone
                    log.debug("closing %s failed", name, exc_info=True)

    # ---------------------------------------------------------------- upkeep
    def release_idle(self) -> None:
        """Give back writer locks idle for ``writer_idle_s`` (only when not ``keep_writer``)."""
        if self.keep_writer:
            return
        now = time.monotonic()
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            if h.writer is None or now - h.last_write < self.writer_idle_s:
                continue
            if h.write_lock.acquire(blocking=False):
                try:
                    if h.writer is not None:
                        h.writer.close()
                        h.writer = None
                finally:
                    h.write_lock.release()

    def sizes(self) -> dict[str, tuple[int, int]]:
        """``{name: (identities, templates)}`` of the galleries this worker has open."""
        with self._lock:
            items = list(self._handles.items())
        out = {}
        for name, h in items:
            g = h.writer or h.reader
            if g is None:
                continue
            try:
                out[name] = (len(g), int(sum(g.template_counts().values())))
            except GalleryError:
                continue
        return out

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for h in self._handles.values() if h.writer or h.reader)

    def close(self) -> None:
        """Close every gallery (saving writers' indexes)."""
        with self._lock:
            names = list(self._handles)
        for name in names:
            self._drop(name)
