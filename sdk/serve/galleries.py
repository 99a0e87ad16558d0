"""The galleries a service worker has open: readers that follow, one writer at a time, and
deletions that no worker can outlive.

A gallery is the directory ``<gallery_root>/<name>``. Reads use this worker's writable
handle when it keeps one, else a read-only handle, which follows the writer's committed
changes by itself (every read checks SQLite's ``PRAGMA data_version`` first). Writes take
the gallery's writer lock (waiting up to ``writer_wait_s`` for another worker to give it
back). With one worker the lock is kept; with several, a worker gives it back after
``writer_idle_s`` without writes, and at once after a write when another worker asked for it
(a waiting worker touches ``.writer-wanted`` in the gallery's folder; the holder then stands
back for ``WRITER_YIELD_S`` so the waiter gets the lock): a worker that writes without pause
cannot keep the others waiting.

Coherence between workers (processes that share nothing but the files):

* every read first asks its handle whether the path still holds the gallery it opened
  (:meth:`~npcface.Gallery.is_current`, one ``stat``); a handle of a deleted gallery is
  retired (closed once no request uses it) and the current gallery is opened instead, so a
  gallery deleted and created again in another worker is never answered from;
* a deletion holds the writer lock (so no worker is writing), stops this worker's new
  requests for the gallery (404), lets its reads in flight finish, and then deletes it
  with :meth:`~npcface.Gallery.delete` (the directory moved aside in one atomic rename, then
  removed): from then on no worker can open or read it, and reads in flight elsewhere
  finish from their open files;
* every write claims the request's deadline just before it commits
  (:func:`~npcface.serve.deadline.claim_write`): a request answered 503 ``timeout`` never
  commits afterwards.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    GalleryBusyError,
    GalleryExistsError,
    GalleryNotFoundError,
    InvalidArgumentError,
)
from ..gallery.local import sweep_deleted
from .deadline import claim_write

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DB_NAME = "gallery.db"
WANTED = ".writer-wanted"
"""Touched by a worker waiting for a gallery's writer lock (see the module's notes)."""
WRITER_YIELD_S = 0.2
"""How long a worker that gave the writer lock to a waiting worker waits before it asks for
it again (waiters try every 20 ms)."""


def check_name(name: str) -> str:
    """A gallery name: 1-64 letters, digits, ``.``, ``_``, ``-``, not starting with a dot.

    Raises:
        InvalidArgumentError: not such a name.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgumentError(
            f"gallery name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            input="name",
        )
    return name


def not_found(name: str) -> GalleryNotFoundError:
    """The service's 404 for a gallery (its name, never its path)."""
    return GalleryNotFoundError(
        f"no gallery named {name!r}; create it with POST /v1/galleries",
        input=name,
    )


@dataclass
class _Reader:
    """A read-only handle and the requests using it."""

    gallery: Any
    users: int = 0
    retired: bool = False


@dataclass
class _Handle:
    reader: _Reader | None = None
    writer: Any = None
    writer_since: float = 0.0  # when this worker took the writer lock (wall clock)
    yield_until: float = 0.0  # monotonic: gave the lock to a waiter, do not take it back yet
    writer_readers: int = 0  # requests reading through the kept writer (one worker)
    deleting: bool = False
    last_write: float = 0.0
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    open_lock: threading.Lock = field(default_factory=threading.Lock)


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
        self._read_done = threading.Condition(self._lock)
        sweep_deleted(self.root)  # deletions cut short by a crash

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
            GalleryNotFoundError: (404). InvalidArgumentError: not a gallery name.
        """
        if not self.exists(name):
            raise not_found(name)
        return name

    def _handle(self, name: str) -> _Handle:
        with self._lock:
            return self._handles.setdefault(name, _Handle())

    # ---------------------------------------------------------------- reads
    @contextmanager
    def reader(self, name: str) -> Iterator[Any]:
        """A gallery to read, caught up with every committed write, and the one at the path
        now (never a deleted one).

        Raises:
            GalleryNotFoundError: (404).
        """
        self.require(name)
        h = self._handle(name)
        with self._lock:
            if h.deleting:
                raise not_found(name)
            writer = h.writer if self.keep_writer else None  # a kept writer: this worker's
            if writer is not None and writer.is_current():
                h.writer_readers += 1
            else:
                writer = None
        if writer is not None:
            try:
                with _translated(name):
                    yield writer
            finally:
                with self._lock:
                    h.writer_readers -= 1
                    self._read_done.notify_all()
            return
        entry = self._reader(name, h)
        try:
            with _translated(name):
                yield entry.gallery
        finally:
            self._release(entry)

    def _reader(self, name: str, h: _Handle) -> _Reader:
        """The handle's current reader, in use by one more request (opened when there is
        none, or when the one there belongs to a gallery deleted since)."""
        from ..gallery import Gallery

        with h.open_lock:
            with self._lock:
                if h.deleting or self._handles.get(name) is not h:
                    raise not_found(name)  # deleted meanwhile
                entry = h.reader
                if entry is not None and entry.gallery.is_current():
                    entry.users += 1
                    return entry
                if entry is not None:
                    self._retire(entry)
                    h.reader = None
            try:
                gallery = Gallery.open(self.path(name), readonly=True)
            except GalleryNotFoundError:
                raise not_found(name) from None
            with self._lock:
                entry = h.reader = _Reader(gallery, users=1)
            return entry

    def _release(self, entry: _Reader) -> None:
        with self._lock:
            entry.users -= 1
            close = entry.retired and entry.users == 0
        if close:
            _close_quietly(entry.gallery)

    def _retire(self, entry: _Reader) -> None:
        """Close ``entry`` once no request uses it (call with ``self._lock`` held)."""
        entry.retired = True
        if entry.users == 0:
            _close_quietly(entry.gallery)

    # ---------------------------------------------------------------- writes
    @contextmanager
    def writer(self, name: str) -> Iterator[Any]:
        """The gallery open for writing by this worker (one write at a time per gallery);
        the request's deadline is claimed first (:func:`claim_write`).

        Raises:
            GalleryNotFoundError; GalleryBusyError when another process kept the writer
                lock longer than ``writer_wait_s``; RequestTimeoutError when the request was
                answered 503 already.
        """
        while True:
            self.require(name)
            h = self._handle(name)
            with h.write_lock:
                with self._lock:
                    if self._handles.get(name) is not h:
                        continue  # deleted while we waited: look again
                if h.writer is not None and not h.writer.is_current():  # deleted under us
                    _close_quietly(h.writer)
                    h.writer = None
                if h.writer is None:
                    wait = h.yield_until - time.monotonic()
                    if wait > 0:  # just handed to a waiting worker: let it take the lock
                        time.sleep(wait)
                    h.writer = self._open_writable(name)
                    h.writer_since = time.time()
                claim_write()
                try:
                    with _translated(name):
                        yield h.writer
                finally:
                    h.last_write = time.monotonic()
                    if h.writer is not None and not self.keep_writer and self._wanted(name, h):
                        _close_quietly(h.writer)  # another worker waits for the lock
                        h.writer = None
                        h.yield_until = time.monotonic() + WRITER_YIELD_S
                return

    def _open_writable(self, name: str) -> Any:
        from ..gallery import Gallery

        deadline = time.monotonic() + self.writer_wait_s
        asked = 0.0
        while True:
            try:
                return Gallery.open(self.path(name))
            except GalleryNotFoundError:
                raise not_found(name) from None
            except GalleryBusyError:
                now = time.monotonic()
                if now >= deadline:
                    raise GalleryBusyError(
                        f"gallery {name!r} is being written by another process; retry later",
                        input=name,
                    ) from None
                if now - asked > 0.1:  # ask the holder to hand it over after its write
                    asked = now
                    try:
                        (self.path(name) / WANTED).touch()
                    except FileNotFoundError:
                        raise not_found(name) from None
            time.sleep(0.02)

    def _wanted(self, name: str, h: _Handle) -> bool:
        """Whether another worker asked for the writer lock since this one took it."""
        try:
            return (self.path(name) / WANTED).stat().st_mtime >= h.writer_since
        except FileNotFoundError:
            return False

    def create(self, name: str, **options: Any) -> Any:
        """Create gallery ``name`` (options as :meth:`Gallery.create`); its info.

        Raises:
            GalleryExistsError (409); RequestTimeoutError.
        """
        from ..gallery import Gallery

        path = self.path(name)
        if self.exists(name):
            raise GalleryExistsError(f"gallery {name!r} exists already", input=name)
        while True:
            h = self._handle(name)
            with h.write_lock:
                with self._lock:
                    if self._handles.get(name) is not h:
                        continue  # a deletion finished while we waited: look again
                claim_write()
                try:
                    gallery = Gallery.create(path, **options)
                except (GalleryExistsError, GalleryBusyError):
                    raise GalleryExistsError(
                        f"gallery {name!r} exists already", input=name
                    ) from None
                info = gallery.info()
                if self.keep_writer and h.writer is None:
                    h.writer = gallery
                    h.last_write = time.monotonic()
                else:
                    gallery.close()
                return info

    def delete(self, name: str) -> None:
        """Delete gallery ``name`` and its files. When this returns no worker can answer
        from it (see the module's notes).

        Raises:
            GalleryNotFoundError, GalleryBusyError, RequestTimeoutError.
        """
        h = self._handle(name)
        with self.writer(name) as gallery:
            with self._lock:  # new requests of this worker: 404; reads in flight: finish
                h.deleting = True
                while h.writer_readers:
                    self._read_done.wait()
            try:
                gallery.delete()
            except BaseException:
                with self._lock:
                    h.deleting = False
                raise
            finally:
                h.writer = None
        with self._lock:
            if h.reader is not None:
                self._retire(h.reader)
                h.reader = None
            if self._handles.get(name) is h:
                del self._handles[name]

    # ---------------------------------------------------------------- upkeep
    def release_idle(self) -> None:
        """Give back writer locks idle for ``writer_idle_s``, or asked for by another worker
        (only when not ``keep_writer``)."""
        if self.keep_writer:
            return
        now = time.monotonic()
        with self._lock:
            handles = list(self._handles.items())
        for name, h in handles:
            if h.writer is None:
                continue
            if now - h.last_write < self.writer_idle_s and not self._wanted(name, h):
                continue
            if h.write_lock.acquire(blocking=False):
                try:
                    if h.writer is not None:
                        _close_quietly(h.writer)
                        h.writer = None
                finally:
                    h.write_lock.release()

    def sizes(self) -> dict[str, tuple[int, int]]:
        """``{name: (identities, templates)}`` of the galleries this worker has open."""
        with self._lock:
            items = list(self._handles.items())
        out = {}
        for name, h in items:
            g = h.writer or (h.reader.gallery if h.reader is not None else None)
            if g is None or not g.is_current():
                continue
            try:
                out[name] = (len(g), int(sum(g.template_counts().values())))
            except Exception:  # noqa: BLE001 - closed or deleted meanwhile: not a size
                continue
        return out

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for h in self._handles.values() if h.writer or h.reader)

    def close(self) -> None:
        """Close every gallery (saving writers' indexes)."""
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for h in handles:
            if h.writer is not None:
                _close_quietly(h.writer)
            if h.reader is not None:
                with self._lock:
                    self._retire(h.reader)


@contextmanager
def _translated(name: str) -> Iterator[None]:
    """Gallery errors that mean "gone" as the service's 404, naming no server path."""
    try:
        yield
    except GalleryNotFoundError:
        raise not_found(name) from None


def _close_quietly(gallery: Any) -> None:
    try:
        gallery.close()
    except Exception:  # noqa: BLE001 - its files may be gone
        log.debug("closing %s failed", gallery.path, exc_info=True)
