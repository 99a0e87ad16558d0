"""The local gallery backend: a directory with SQLite as the source of truth and a FAISS
index as its cache; one writer process, any number of readers that follow it.

Parts, one job each: :class:`~npcface.gallery.store.Store` (the database),
:class:`~npcface.gallery.idmap.IdMap` (template id -> identity),
:class:`~npcface.gallery.upkeep.IndexKeeper` (the index in step with the database),
:mod:`npcface.gallery.search` (templates -> identities) and
:class:`~npcface.gallery.fsutil.WriterLock` (one writer). :class:`LocalBackend` wires them
together behind the :class:`~npcface.gallery.backend.Backend` protocol.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    GalleryArgumentError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
)
from ..fsutil import fsync_dir
from . import index as ix
from .backend import CompactReport, ConsistencyReport, GalleryInfo
from .fsutil import WriterLock
from .idmap import IdMap
from .store import SCHEMA_VERSION, VECTOR_DTYPES, AddOnce, Store
from .upkeep import IndexKeeper, IndexNewerError

DB_NAME = "gallery.db"
DELETING = ".deleting-"
"""Prefix of a gallery directory moved aside by a deletion (removed right after)."""
READER_LOAD_ATTEMPTS = 3
log = logging.getLogger(__name__)
SEARCH_PARAMS = ("efSearch", "nprobe", "k_factor")


class LocalBackend:
    """A gallery directory opened for reading, or for writing under the writer lock.

    Use :meth:`create` or :meth:`open`. Not thread-safe by itself: the
    :class:`~npcface.gallery.Gallery` facade serialises calls.
    """

    def __init__(
        self,
        directory: Path,
        store: Store,
        lock: WriterLock | None,
        on_bad_index: str,
        pin: GalleryPin | None = None,
    ) -> None:
        self.location = directory
        self.store = store
        self.lock = lock
        self.pin = pin
        self.readonly = lock is None
        self.dim = store.dim
        self.metric = str(store.meta("metric"))
        self.ids = IdMap()
        self.keeper = IndexKeeper(directory, store, self.ids, readonly=self.readonly)
        self._seen_version: int | None = None  # PRAGMA data_version the state reflects
        self._released = False
        try:
            if self.readonly:
                self._load_snapshot(on_bad_index)
            else:
                ix.remove_partial_saves(directory)
                self.keeper.load(on_bad_index)
        except BaseException:
            self.release()
            raise

    def _load_snapshot(self, on_bad_index: str) -> None:
        """Reader: load from one consistent database state. The writer may save a newer
        index between this snapshot and the reading of the index file; then try again."""
        for attempt in range(READER_LOAD_ATTEMPTS):
            with self.store.read_snapshot():
                self._seen_version = self.store.data_version()
                try:
                    last = attempt == READER_LOAD_ATTEMPTS - 1
                    self.keeper.load(on_bad_index, newer_is_error=not last)
                    return
                except IndexNewerError:
                    continue

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        location: str | Path,
        *,
        dim: int,
        metric: str,
        index: str,
        dtype: str,
        model: str | None,
        search_params: Mapping[str, int | None] | None,
    ) -> LocalBackend:
        """Create a gallery directory (the facade has checked ``dim``, ``metric``, ``model``).

        Raises:
            GalleryError: invalid ``index``, ``dtype`` or ``search_params``, or a gallery
                already exists there.
        """
        directory = Path(location)
        if dtype not in VECTOR_DTYPES:
            raise GalleryArgumentError(
                f"dtype must be one of {', '.join(VECTOR_DTYPES)}, not {dtype!r}"
            )
        spec = _index_spec(index, dim)
        factory = ix.target_factory(spec, 0, dim)
        if search_params is not None and not isinstance(search_params, Mapping):
            raise GalleryArgumentError(f"search_params must be a mapping, got {search_params!r}")
        params = {k: v for k, v in (search_params or {}).items() if v is not None}
        for name, value in params.items():
            _check_param(name, value, _allowed_params(spec, factory, dim), spec)
        params = {k: int(v) for k, v in params.items()}
        if directory.exists() and not directory.is_dir():
            raise GalleryError(f"{directory}: exists and is not a directory")
        if (directory / DB_NAME).exists():
            raise GalleryExistsError(
                f"{directory}: a gallery already exists here; open it with Gallery.open()"
            )
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory)
        lock.acquire()
        try:
            if (directory / DB_NAME).exists():  # created meanwhile by another process
                raise GalleryExistsError(f"{directory}: a gallery already exists here")
            for stale in [*directory.glob("index-*.faiss"), directory / ix.SIDECAR_NAME]:
                stale.unlink(missing_ok=True)
            store = Store.create(
                directory / DB_NAME,
                {
                    "dim": dim,
                    "metric": metric,
                    "dtype": dtype,
                    "index_spec": spec,
                    "factory": factory,
                    "search_params": params,
                    "model": model,
                    "created": time.time(),
                },
            )
        except BaseException:
            lock.release()
            raise
        return cls(directory, store, lock, "rebuild")

    @staticmethod
    def exists(location: str | Path) -> bool:
        """Whether a gallery is at ``location`` (a directory holding its database)."""
        return (Path(location) / DB_NAME).is_file()

    @classmethod
    def open(cls, location: str | Path, *, readonly: bool, on_bad_index: str) -> LocalBackend:
        """Open a gallery directory (see :meth:`npcface.gallery.Gallery.open`)."""
        directory = Path(location)
        if not (directory / DB_NAME).is_file():
            raise GalleryNotFoundError(
                f"{directory}: no gallery here (missing {DB_NAME}); create one with "
                "Gallery.create(path, dim) or `npcface gallery create PATH --dim D`"
            )
        lock = None
        if not readonly:
            lock = WriterLock(directory)
            lock.acquire()
        try:
            store, pin = _open_pinned(directory / DB_NAME, readonly)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        try:
            return cls(directory, store, lock, on_bad_index, pin)
        except BaseException:
            pin.close()
            raise

    # --------------------------------------------------------------- reading
    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A reader pins one committed database state and first catches its index and id
        map up with it: one ``PRAGMA data_version`` call when nothing changed. The writer
        is the only one changing the database and needs neither."""
        if not self.readonly:
            yield
            return
        self._check_current()
        with self.store.read_snapshot():
            version = self.store.data_version()
            if version != self._seen_version:
                self.keeper.follow()
                self._seen_version = version
            yield

    def is_current(self) -> bool:
        return self.pin is None or self.pin.current()

    def _check_current(self) -> None:
        """Raises GalleryNotFoundError when the path no longer holds the database this reader
        opened (deleted, or deleted and created again): one ``stat``."""
        if not self.is_current():
            raise GalleryNotFoundError(
                f"{self.location}: the gallery was deleted or replaced since it was opened; "
                "open it again"
            )

    def refresh(self) -> int:
        if self.readonly:
            self._check_current()
            with self.store.read_snapshot():
                version = self.store.data_version()
                if version == self._seen_version:
                    return 0
                changes = self.keeper.follow()
                self._seen_version = version
                return changes
        changes = self.keeper.catch_up()
        self.keeper.apply_params()
        return changes

    def model(self) -> str | None:
        value = self.store.meta("model")
        return str(value) if value is not None else None

    def factory(self) -> str:
        return self.keeper.factory

    def tombstones(self) -> int:
        return self.keeper.tombstones

    def identity_count(self) -> int:
        return self.ids.identities

    def has_identity(self, name: str) -> bool:
        return self.store.has_identity(name)

    def identities(self) -> list[str]:
        return self.store.identity_names()

    def template_counts(self) -> list[tuple[str, int]]:
        return self.store.template_counts()

    def templates(self, name: str) -> list[int]:
        return [t for t, _, _ in self.store.identity_templates(name)]

    def content_hashes(self) -> set[str]:
        return self.store.content_hashes()

    def metadata(self, name: str) -> dict[str, Any] | None:
        return self.store.identity_metadata(name)

    def search_sizes(self) -> tuple[int, int, int | None]:
        return self.keeper.ntotal, self.ids.identities, None

    def template_search(
        self, queries: np.ndarray, kk: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sims, tids = self.keeper.search(queries, kk)
        return sims, tids, self.ids.owners_of(tids)

    def identity_records(self, ids: Sequence[int]) -> dict[int, tuple[str, dict | None]]:
        return self.store.identity_records(ids)

    def info(self) -> GalleryInfo:
        counts = self.store.counts()
        keeper = self.keeper
        plan = keeper.gpu_plan(5)
        disk = _disk_bytes(self.location)
        return GalleryInfo(
            path=str(self.location),
            dim=self.dim,
            metric=self.metric,
            dtype=str(self.store.meta("dtype")),
            index_spec=str(self.store.meta("index_spec")),
            factory=keeper.factory,
            search_params=keeper.effective_params(),
            identities=counts.identities,
            templates=counts.templates,
            index_vectors=keeper.ntotal,
            tombstones=keeper.tombstones,
            removable=keeper.traits.removable,
            device="gpu" if plan.use else "cpu",
            device_reason=plan.reason,
            model=self.model(),
            index_saved=not keeper.dirty,
            schema_version=SCHEMA_VERSION,
            disk_bytes=int(disk),
            created=float(self.store.meta("created", 0.0)),
        )

    def check(self) -> ConsistencyReport:
        in_index = ix.index_ids(self.keeper.index)
        live, _ = self.store.template_owners()
        uniq, counts = np.unique(in_index, return_counts=True)
        duplicates = int(np.count_nonzero(counts > 1))
        missing = np.setdiff1d(live, uniq)
        unexpected = np.setdiff1d(uniq, live)
        ok = missing.size == 0 and duplicates == 0
        if self.keeper.traits.removable:
            ok = ok and unexpected.size == 0
        return ConsistencyReport(
            ok=bool(ok),
            missing=tuple(int(i) for i in missing[:100]),
            unexpected=tuple(int(i) for i in unexpected[:100]),
            duplicates=duplicates,
        )

    # ---------------------------------------------------------------- writes
    def add(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str | None] | None,
        content_hashes: Sequence[str | None] | None,
        metadata: Mapping[str, Mapping[str, Any]] | None,
    ) -> list[int]:
        vectors = self._as_stored(vectors)
        tids, owners = self.store.add_templates(names, vectors, sources, content_hashes, metadata)
        # committed: from here on the templates exist whatever happens to the index
        self.keeper.append(tids, owners, vectors)
        return [int(i) for i in tids]

    def add_once(
        self,
        name: str,
        vectors: np.ndarray,
        content_hashes: Sequence[str],
        sources: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None,
        request: tuple[str, str] | None,
    ) -> AddOnce:
        vectors = self._as_stored(vectors)
        done = self.store.add_once(name, vectors, content_hashes, sources, metadata, request)
        if done.new_ids.size:
            self.keeper.append(done.new_ids, done.new_owners, vectors[done.new_rows])
        return done

    def _as_stored(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors as the database keeps them (float16 galleries round them), so the
        index holds what a rebuild from the database would."""
        if self.store.dtype != np.float32:
            return vectors.astype(self.store.dtype).astype(np.float32)
        return vectors

    def remove_identities(self, names: Sequence[str]) -> int:
        tids = self.store.remove_identities(names)
        self._erase(tids)
        return int(tids.size)

    def remove_templates(self, template_ids: Sequence[int]) -> int:
        tids = self.store.remove_templates(template_ids)
        self._erase(tids)
        return int(tids.size)

    def _erase(self, tids: np.ndarray) -> None:
        """The removed templates out of the index, its file and the database's files."""
        self.keeper.forget(tids)
        if tids.size:
            self.keeper.erase()
            self.store.erase()

    def set_model(self, name: str) -> None:
        self.store.set_meta(model=name)

    def set_search_params(self, params: Mapping[str, int | None]) -> None:
        overrides = dict(self.store.meta("search_params") or {})
        spec = str(self.store.meta("index_spec"))
        for name, value in params.items():
            if value is None:
                overrides.pop(name, None)
                continue
            _check_param(name, value, _allowed_params(spec, self.keeper.factory, self.dim), spec)
            overrides[name] = int(value)
        self.store.set_meta(search_params=overrides)
        self.keeper.apply_params()

    def rebuild(self, index: str | None) -> None:
        if index is not None:
            self.store.set_meta(index_spec=_index_spec(index, self.dim), search_params={})
        self.compact(vacuum=False)

    def compact(self, vacuum: bool) -> CompactReport:
        dropped = self.keeper.tombstones
        spec = str(self.store.meta("index_spec"))
        self.keeper.rebuild(ix.target_factory(spec, self.ids.templates, self.dim))
        if vacuum:
            self.store.vacuum()
        return CompactReport(
            dropped,
            f"dropped {dropped} deleted templates; index {self.keeper.factory}"
            + ("; database vacuumed" if vacuum else ""),
        )

    def save(self) -> None:
        self.keeper.save()

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        try:
            if not self.readonly and self.keeper.dirty and self.keeper.index is not None:
                self.keeper.save()
        finally:
            self.release()

    def delete(self) -> None:
        """Delete the gallery directory (a writer). The writable connection closes first,
        while the path is still this gallery's: SQLite removes the write-ahead log and
        shared-memory files by name when the last writable connection closes, and after the
        move that name may belong to a gallery created again at the path. Then, still under
        the writer lock, the directory is moved aside in one atomic rename (from here on no
        process can open it; readers that have it open answer GalleryNotFoundError) and
        removed. Read-only connections never remove files, so theirs may close later."""
        self.store.close()
        aside = self.location.with_name(f"{DELETING}{self.location.name}-{uuid.uuid4().hex[:12]}")
        try:
            os.rename(self.location, aside)
            fsync_dir(self.location.parent)
        finally:
            self.release()
        try:
            shutil.rmtree(aside)
        except OSError as exc:  # unreachable already; sweep_deleted() removes it later
            log.warning("%s: removing the deleted gallery's files: %s", self.location, exc)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            self.store.close()
        finally:
            if self.pin is not None:
                self.pin.close()
            if self.lock is not None:
                self.lock.release()

    def __repr__(self) -> str:
        return (
            f"identities={self.ids.identities}, templates={self.ids.templates}, "
            f"index={self.keeper.factory!r}"
        )


class GalleryPin:
    """Tells whether a gallery's path still holds the gallery a handle opened.

    It holds the gallery *directory* open (so its inode cannot be reused while the handle
    lives) and remembers the database file's inode (which SQLite's open connection keeps
    from reuse). It never opens the database file itself: closing any descriptor of a file
    drops every POSIX lock the process holds on it, SQLite's included, and then another
    process may checkpoint and delete a write-ahead log that connections here still use.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        st = os.fstat(self._fd)
        self.dir_key = (st.st_dev, st.st_ino)
        self.db_key = _file_key(directory / DB_NAME)

    def current(self) -> bool:
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.dir_key and (
            _file_key(self.directory / DB_NAME) == self.db_key
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _open_pinned(path: Path, readonly: bool) -> tuple[Store, GalleryPin]:
    """The database at ``path`` and a pin on its gallery (see :class:`GalleryPin`).

    Raises:
        GalleryNotFoundError: no database there, or it kept changing while being opened.
    """
    for _ in range(3):
        try:
            pin = GalleryPin(path.parent)
        except FileNotFoundError:
            raise GalleryNotFoundError(f"{path.parent}: no gallery here") from None
        if pin.db_key is None:
            pin.close()
            raise GalleryNotFoundError(f"{path.parent}: no gallery here")
        try:
            store = Store.open(path, readonly=readonly)
        except BaseException:
            pin.close()
            raise
        if pin.current():  # the same directory and database before and after SQLite opened it
            return store, pin
        store.close()
        pin.close()
    raise GalleryNotFoundError(f"{path.parent}: the gallery kept changing while it was opened")


def sweep_deleted(root: Path) -> None:
    """Remove what deletions cut short by a crash left under ``root`` (directories moved
    aside by :meth:`LocalBackend.delete`)."""
    for leftover in root.glob(f"{DELETING}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _disk_bytes(directory: Path) -> int:
    """Size of the files in ``directory`` (files that vanish meanwhile, e.g. an index file
    replaced by the writer's save, are skipped)."""
    total = 0
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            if entry.is_file():
                total += entry.stat().st_size
    return total


def _index_spec(index: Any, dim: int) -> str:
    """``auto`` or a checked FAISS factory string."""
    if not isinstance(index, str) or not index.strip():
        raise GalleryArgumentError(f"index must be 'auto' or a FAISS factory string, got {index!r}")
    spec = ix.AUTO if index.strip().lower() == ix.AUTO else index.strip()
    if spec != ix.AUTO:
        try:
            ix.canonical_factory(spec, dim)  # validates
        except GalleryError as exc:
            raise GalleryArgumentError(str(exc)) from None
    return spec


def _allowed_params(spec: str, factory: str, dim: int) -> tuple[str, ...]:
    """Search parameters that apply now or once the index reaches its intended type."""
    names = set(ix.traits(factory, dim).params)
    if spec == ix.AUTO:
        futures = [ix.scan_factory(dim), ix.ivf_factory(dim)]
    else:
        futures = [ix.canonical_factory(spec, dim)]
    for future in futures:
        names |= set(ix.traits(future, dim).params)
    return tuple(sorted(names))


def _check_param(name: str, value: Any, allowed: tuple[str, ...], spec: str) -> None:
    if name not in SEARCH_PARAMS:
        raise GalleryArgumentError(
            f"unknown search parameter {name!r}; use efSearch, nprobe or k_factor"
        )
    try:
        ok = not isinstance(value, bool) and int(value) >= 1 and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise GalleryArgumentError(f"{name} must be a positive integer, got {value!r}")
    if name not in allowed:
        raise GalleryArgumentError(
            f"{name} does not apply to index {spec!r} "
            f"(it takes {', '.join(allowed) or 'no parameters'})"
        )
