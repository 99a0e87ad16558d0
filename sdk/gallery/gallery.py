"""The :class:`Gallery`: enrolled identities, searchable in milliseconds, nothing lost.

A gallery is a directory::

    GALLERY/
      gallery.db          SQLite: identities, templates (the vectors), metadata, schema version
      index.json          sidecar: which index file, its SHA-256, factory string, coverage
      index-<sha>.faiss   the FAISS index (a cache of the database, rebuildable at any time)
      .lock               held by the process that has the gallery open for writing

The database is the source of truth. :meth:`Gallery.add` returns only after its transaction
has committed; the index is updated in memory and saved atomically by :meth:`Gallery.save`
(also on :meth:`Gallery.close`, after rebuilds, and periodically by bulk enrolment). The
sidecar records the last template id and the last deletion the saved index covers, so
:meth:`Gallery.open` catches a stale index up from the database, and rebuilds it when it is
missing, damaged (SHA-256 mismatch), of another type, or newer than the database.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import EmbeddingError, GalleryError
from ..results import Match
from ..validate import check_embeddings, check_threshold
from . import index as ix
from .fsutil import WriterLock
from .store import SCHEMA_VERSION, VECTOR_DTYPES, Store

log = logging.getLogger(__name__)

DB_NAME = "gallery.db"
METRICS = ("cosine", "ip")
"""``cosine``: vectors are L2-normalised on the way in, similarity is the cosine in [-1, 1].
``ip``: raw inner product of the vectors as given."""

MAX_NAME_LENGTH = 1024
TOMBSTONE_WARNING = 0.25
"""Warn (once per session) when more than this fraction of the index is deleted templates."""


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery's settings and size.

    Attributes:
        path: the gallery directory.
        dim: embedding dimension.
        metric: ``cosine`` or ``ip``.
        dtype: how vectors are stored in the database (``float32`` or ``float16``).
        index_spec: what the user asked for: ``auto`` or a FAISS factory string.
        factory: the FAISS factory string of the index in use.
        search_params: the search parameters in effect (``efSearch``, ``nprobe``).
        identities: enrolled identities.
        templates: stored templates (embeddings); an identity may have several.
        index_vectors: vectors in the index, deleted-but-not-compacted ones included.
        tombstones: deleted templates still in the index (filtered out at search time).
        removable: whether the index deletes vectors for real (else tombstones + compact()).
        device: ``cpu`` or ``gpu`` (for searches with the default k).
        device_reason: why that device.
        model: name of the embedding model the gallery is for, if recorded.
        index_saved: the index file on disk is up to date with the database.
        schema_version: version of the database schema.
        disk_bytes: size of the gallery directory.
        created: UNIX time of creation.
    """

    path: str
    dim: int
    metric: str
    dtype: str
    index_spec: str
    factory: str
    search_params: dict[str, int]
    identities: int
    templates: int
    index_vectors: int
    tombstones: int
    removable: bool
    device: str
    device_reason: str
    model: str | None
    index_saved: bool
    schema_version: int
    disk_bytes: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsistencyReport:
    """Comparison of the index's ids with the database's live templates.

    Attributes:
        ok: every live template is in the index exactly once, and ids that are not live are
            only present where the index keeps tombstones.
        missing: live template ids absent from the index.
        unexpected: ids in the index that are not live (expected tombstones where the index
            cannot remove vectors).
        duplicates: number of ids stored more than once.
    """

    ok: bool
    missing: tuple[int, ...] = field(default=())
    unexpected: tuple[int, ...] = field(default=())
    duplicates: int = 0


class Gallery:
    """Enrolled identities with their face templates, searchable by similarity.

    Create one with :meth:`create`, reopen it with :meth:`open`; use it as a context manager
    (or call :meth:`close`) so the index is saved. One process may have a gallery open for
    writing (a lock file enforces it); any number may open it ``readonly``. Methods are
    thread-safe (serialised by a lock).

    Example::

        with Gallery.create("staff", dim=512) as g:
            g.add("alice", alice_embeddings, metadata={"employee": 17})
            g.search(query, k=5)[0]          # [Match(identity='alice', ...), ...]
            g.identify(query, threshold=0.4) # Match or None (open set)
    """

    def __init__(
        self,
        directory: Path,
        store: Store,
        lock: WriterLock | None,
        on_bad_index: str = "rebuild",
    ) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        if on_bad_index not in ("rebuild", "raise"):
            raise GalleryError(f"on_bad_index must be 'rebuild' or 'raise', not {on_bad_index!r}")
        self.path = directory
        self._store = store
        self._writer_lock = lock
        self._readonly = lock is None
        self._mutex = threading.RLock()
        self._closed = False
        self.dim = store.dim
        self.metric = str(store.meta("metric"))
        self._index: faiss.Index | None = None
        self._factory = str(store.meta("factory"))
        self._covered_tid = 0
        self._covered_seq = 0
        self._dirty = False
        self._saved_snapshot: ix.IndexSnapshot | None = None
        self._gpu_index: faiss.Index | None = None
        self._tombstone_warned = False
        self._owner = np.full(1, -1, dtype=np.int64)  # template id -> identity id (-1: none)
        self._ident_count = np.zeros(1, dtype=np.int64)  # identity id -> live templates
        self._n_live = 0
        self._n_identities = 0
        try:
            self._load_owners()
            self._load_index(on_bad_index)
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        metric: str = "cosine",
        *,
        index: str = ix.AUTO,
        dtype: str = "float32",
        model: str | None = None,
        search_params: Mapping[str, int] | None = None,
    ) -> Gallery:
        """Create an empty gallery in directory ``path`` (created if needed).

        Args:
            path: a new directory, or an existing one without a gallery in it.
            dim: embedding dimension (e.g. 128 for SFace, 512 for ArcFace).
            metric: ``cosine`` (vectors normalised; the usual choice for face embeddings) or
                ``ip`` (raw inner product).
            index: ``auto`` (exact search below 50k templates, then fast-scan PQ codes
                with exact re-ranking, from 500k behind an IVF front; see
                :mod:`npcface.gallery.index`) or any FAISS ``index_factory`` string, e.g.
                ``"HNSW32,SQ8"`` or ``"IVF4096_HNSW32,PQ64"``. Indexes that need training are
                built once there are enough templates; until then search is exact.
            dtype: storage type of vectors in the database, ``float32`` or ``float16``
                (half the disk; the precision loss is ~1e-3 in cosine).
            model: name of the embedding model whose vectors the gallery holds; recorded so
                that vectors of another model are refused by the recogniser integration.
            search_params: overrides of the search parameters (``efSearch``, ``nprobe``).

        Returns:
            The open gallery (writable).

        Raises:
            GalleryError: invalid settings, or a gallery already exists at ``path``.
        """
        directory = Path(path)
        dim = _check_dim(dim)
        if metric not in METRICS:
            raise GalleryError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
        if dtype not in VECTOR_DTYPES:
            raise GalleryError(f"dtype must be one of {', '.join(VECTOR_DTYPES)}, not {dtype!r}")
        spec = ix.AUTO if str(index).strip().lower() == ix.AUTO else str(index).strip()
        if spec != ix.AUTO:
            ix.canonical_factory(spec, dim)  # validates
        factory = ix.target_factory(spec, 0, dim)
        params = {k: v for k, v in (search_params or {}).items() if v is not None}
        for name, value in params.items():
            _check_param(name, value, _allowed_params(spec, factory, dim), spec)
        params = {k: int(v) for k, v in params.items()}
        if directory.exists() and not directory.is_dir():
            raise GalleryError(f"{directory}: exists and is not a directory")
        if (directory / DB_NAME).exists():
            raise GalleryError(
                f"{directory}: a gallery already exists here; open it with Gallery.open()"
            )
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory)
        lock.acquire()
        try:
            if (directory / DB_NAME).exists():  # created meanwhile by another process
                raise GalleryError(f"{directory}: a gallery already exists here")
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
        return cls(directory, store, lock)

    @classmethod
    def open(
        cls, path: str | Path, *, readonly: bool = False, on_bad_index: str = "rebuild"
    ) -> Gallery:
        """Open an existing gallery.

        Args:
            path: the gallery directory.
            readonly: open without the writer lock; the index is caught up in memory only and
                every write raises. Use it to search while another process enrols.
            on_bad_index: ``rebuild`` (default) rebuilds a missing, damaged or mismatched
                index from the database; ``raise`` raises
                :class:`~npcface.errors.GalleryCorruptError` instead.

        Raises:
            GalleryError: no gallery at ``path``, or it is open for writing elsewhere.
            GalleryCorruptError: the database is damaged or of a newer schema version.
        """
        directory = Path(path)
        if not (directory / DB_NAME).is_file():
            raise GalleryError(
                f"{directory}: no gallery here (missing {DB_NAME}); create one with "
                "Gallery.create(path, dim) or `npcface gallery create PATH --dim D`"
            )
        lock = None
        if not readonly:
            lock = WriterLock(directory)
            lock.acquire()
        try:
            store = Store.open(directory / DB_NAME, readonly=readonly)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(directory, store, lock, on_bad_index=on_bad_index)

    # ------------------------------------------------------------------ state
    def _load_owners(self) -> None:
        tids, owners = self._store.template_owners()
        counts = self._store.counts()
        self._owner = np.full(max(counts.max_template_id, 0) + 1, -1, dtype=np.int64)
        self._owner[tids] = owners
        size = int(owners.max()) + 1 if owners.size else 1
        self._ident_count = np.bincount(owners, minlength=size).astype(np.int64)
        self._n_live = int(tids.size)
        self._n_identities = int(np.count_nonzero(self._ident_count))

    def _load_index(self, on_bad_index: str) -> None:
        counts = self._store.counts()
        if counts.max_template_id == 0 and not (self.path / ix.SIDECAR_NAME).exists():
            self._rebuild(self._factory)  # a new gallery: nothing to load yet
            return
        try:
            index, snap = ix.load_index(self.path, dim=self.dim)
            if snap.factory != self._factory:
                raise ix.IndexFileError(
                    f"{self.path}: saved index is {snap.factory!r}, the gallery uses {self._factory!r}"
                )
            if (
                snap.last_template_id > counts.max_template_id
                or snap.deletion_seq > counts.max_deletion_seq
            ):
                raise ix.IndexFileError(
                    f"{self.path}: saved index is newer than the database (was the database "
                    "restored from an older copy?)"
                )
        except ix.IndexFileError as exc:
            if on_bad_index == "raise":
                raise
            log.warning("%s; rebuilding the index from the database", exc)
            self._rebuild(self._factory)
            return
        self._index = index
        self._covered_tid = snap.last_template_id
        self._covered_seq = snap.deletion_seq
        self._saved_snapshot = snap
        self._apply_params()
        caught = self._catch_up()
        if not self._index_counts_ok():
            log.warning("%s: index does not match the database; rebuilding it", self.path)
            self._rebuild(self._factory)
            return
        if caught:
            log.info("%s: index caught up with %d database changes", self.path, caught)
        self._maybe_upgrade()
        if self._dirty and not self._readonly:
            self.save()

    def _catch_up(self) -> int:
        """Apply deletions and additions the index has not seen. Returns how many."""
        max_tid, max_seq = self._store.high_water()
        changes = 0
        deleted = self._store.deletions_after(self._covered_seq)
        if deleted.size:
            changes += int(deleted.size)
            if self._traits.removable:
                self._index.remove_ids(deleted)
            self._unmap(deleted[deleted < self._owner.size])
        for ids, owners, vecs in self._store.iter_vectors(self._covered_tid, upto=max_tid):
            self._index.add_with_ids(vecs, ids)
            self._map(ids, owners)
            changes += len(ids)
        if changes or (max_tid, max_seq) != (self._covered_tid, self._covered_seq):
            self._dirty = True
            self._gpu_index = None
        self._covered_tid = max_tid
        self._covered_seq = max_seq
        return changes

    def _index_counts_ok(self) -> bool:
        ntotal = int(self._index.ntotal)
        return ntotal == self._n_live if self._traits.removable else ntotal >= self._n_live

    @property
    def _traits(self) -> ix.IndexTraits:
        return ix.traits(self._factory, self.dim)

    def _rebuild(self, factory: str) -> None:
        """Build ``factory`` from every live template in the database, then save it."""
        t0 = time.perf_counter()
        counts = self._store.counts()
        traits = ix.traits(factory, self.dim)
        if traits.min_train > counts.templates:
            log.warning(
                "%s: %s needs %d templates to train, the gallery has %d; searching exactly "
                "(%s) until it has enough",
                self.path,
                factory,
                traits.min_train,
                counts.templates,
                ix.FLAT_FACTORY,
            )
            factory, traits = ix.FLAT_FACTORY, ix.traits(ix.FLAT_FACTORY, self.dim)
        index = ix.create_index(factory, self.dim)
        if traits.min_train:
            ids = self._store.sample_ids(
                ix.training_sample_size(factory, self.dim, counts.templates)
            )
            ix.train_index(index, self._store.vectors(ids))
        self._load_owners()
        for ids, _, vecs in self._store.iter_vectors(0, upto=counts.max_template_id):
            index.add_with_ids(vecs, ids)
        self._index = index
        self._factory = factory
        self._covered_tid = counts.max_template_id
        self._covered_seq = counts.max_deletion_seq
        self._dirty = True
        self._gpu_index = None
        self._tombstone_warned = False
        self._apply_params()
        log.info(
            "%s: built %s over %d templates in %.1f s",
            self.path,
            factory,
            index.ntotal,
            time.perf_counter() - t0,
        )
        if not self._readonly:
            if self._store.meta("factory") != factory:
                self._store.set_meta(factory=factory)
            self.save()

    def _maybe_upgrade(self) -> None:
        """Switch index type when the gallery has grown past the current one."""
        spec = str(self._store.meta("index_spec"))
        target = ix.target_factory(spec, self._n_live, self.dim)
        if target == self._factory or ix.traits(target, self.dim).min_train > self._n_live:
            return
        if spec == ix.AUTO:
            upgrade = ix.tier(target) > ix.tier(self._factory)
        else:
            upgrade = self._factory == ix.FLAT_FACTORY
        if upgrade:
            log.info(
                "%s: %d templates: switching index %s -> %s",
                self.path,
                self._n_live,
                self._factory,
                target,
            )
            self._rebuild(target)

    def _effective_params(self) -> dict[str, int]:
        params = ix.default_search_params(self._factory, max(self._n_live, 1), self.dim)
        overrides = self._store.meta("search_params") or {}
        applicable = self._traits.params
        params.update({k: int(v) for k, v in overrides.items() if k in applicable})
        return params

    def _apply_params(self) -> None:
        params = self._effective_params()
        if params:
            ix.apply_search_params(self._index, params)

    # ----------------------------------------------------------------- writes
    def add(
        self,
        identity: str,
        embeddings: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        *,
        sources: Sequence[str | None] | None = None,
        content_hashes: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Enroll templates of one identity (created if new).

        Args:
            identity: the identity's name (non-empty).
            embeddings: (d,) or (n, d) embeddings of that person.
            metadata: JSON-serialisable dict merged into the identity's metadata (returned
                with every :class:`~npcface.results.Match` of this identity).
            sources: optional (n,) text per template, e.g. the image path.
            content_hashes: optional (n,) content hash per template (used by bulk enrolment
                to skip files already enrolled).

        Returns:
            The new template ids. They are durable when this returns.

        Raises:
            GalleryError: wrong dimension, non-finite or zero vectors, bad name or metadata,
                or the gallery is read-only.
        """
        vecs = self._prepare(embeddings, "embeddings", store=True)
        names = [_check_name(identity)] * len(vecs)
        meta = {names[0]: dict(metadata)} if metadata and names else None
        return self._add(names, vecs, sources, content_hashes, meta)

    def add_many(
        self,
        identities: Sequence[str],
        embeddings: np.ndarray,
        *,
        sources: Sequence[str | None] | None = None,
        content_hashes: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Enroll templates of several identities in one transaction (bulk enrolment).

        Args:
            identities: (n,) identity name of each row of ``embeddings``.
            embeddings: (n, d) embeddings.
            sources, content_hashes: as in :meth:`add`.

        Returns:
            The new template ids, in input order; durable when this returns.
        """
        vecs = self._prepare(embeddings, "embeddings", store=True)
        names = [_check_name(n) for n in identities]
        if len(names) != len(vecs):
            raise GalleryError(f"{len(names)} identities for {len(vecs)} embeddings")
        return self._add(names, vecs, sources, content_hashes, None)

    def _add(
        self,
        names: list[str],
        vecs: np.ndarray,
        sources: Sequence[str | None] | None,
        content_hashes: Sequence[str | None] | None,
        metadata: dict[str, dict[str, Any]] | None,
    ) -> list[int]:
        if not len(vecs):
            return []
        with self._mutex:
            self._writable()
            ids, owners = self._store.add_templates(names, vecs, sources, content_hashes, metadata)
            # committed: from here on the templates exist whatever happens to the index
            self._map(ids, owners)
            try:
                if ids[0] == self._covered_tid + 1:
                    self._index.add_with_ids(vecs, ids)
                    self._covered_tid = int(ids[-1])
                    self._dirty = True
                    self._gpu_index = None
                else:
                    self._catch_up()
                self._maybe_upgrade()
                self._apply_params()  # defaults depend on the size
            except Exception:
                # the templates are stored; the in-memory index is not trustworthy any more
                log.exception("%s: index update failed; it will be rebuilt", self.path)
                self._rebuild(self._factory)
            return [int(i) for i in ids]

    def _map(self, ids: np.ndarray, owners: np.ndarray) -> None:
        """Record live templates (ids already known are left as they are)."""
        if not ids.size:
            return
        self._grow(int(ids.max()), int(owners.max()))
        new = self._owner[ids] < 0
        ids, owners = ids[new], owners[new]
        self._owner[ids] = owners
        np.add.at(self._ident_count, owners, 1)
        self._n_live += int(ids.size)
        self._n_identities = int(np.count_nonzero(self._ident_count))

    def _unmap(self, ids: np.ndarray) -> None:
        """Forget deleted templates (unknown ids are ignored)."""
        ids = ids[(ids >= 0) & (ids < self._owner.size)]
        owners = self._owner[ids]
        live = owners >= 0
        self._owner[ids[live]] = -1
        np.subtract.at(self._ident_count, owners[live], 1)
        self._n_live -= int(live.sum())
        self._n_identities = int(np.count_nonzero(self._ident_count))

    def _grow(self, max_tid: int, max_ident: int) -> None:
        if max_tid >= self._owner.size:
            grown = np.full(max(max_tid + 1, 2 * self._owner.size), -1, dtype=np.int64)
            grown[: self._owner.size] = self._owner
            self._owner = grown
        if max_ident >= self._ident_count.size:
            grown = np.zeros(max(max_ident + 1, 2 * self._ident_count.size), dtype=np.int64)
            grown[: self._ident_count.size] = self._ident_count
            self._ident_count = grown

    def remove(self, identity: str) -> int:
        """Delete an identity and all its templates.

        Returns:
            The number of templates deleted.

        Raises:
            GalleryError: unknown identity, or the gallery is read-only.
        """
        return self.remove_many([identity])

    def remove_many(self, identities: Sequence[str]) -> int:
        """Delete several identities in one transaction (all or none).

        Returns:
            The number of templates deleted.

        Raises:
            GalleryError: an identity is unknown (nothing is deleted), or read-only.
        """
        if isinstance(identities, str):
            identities = [identities]
        with self._mutex:
            self._writable()
            ids = self._store.remove_identities(list(identities))
            self._forget(ids)
            return int(ids.size)

    def remove_templates(self, template_ids: Sequence[int]) -> int:
        """Delete individual templates (an identity left with none is deleted too).

        Returns:
            The number of templates that existed and were deleted.
        """
        with self._mutex:
            self._writable()
            ids = self._store.remove_templates(template_ids)
            self._forget(ids)
            return int(ids.size)

    def _forget(self, ids: np.ndarray) -> None:
        if ids.size:
            self._unmap(ids)
            if self._traits.removable:
                self._index.remove_ids(ids)
            self._dirty = True
            self._gpu_index = None
        self._covered_seq = self._store.high_water()[1]
        dead = self.tombstones
        if (
            not self._tombstone_warned
            and self._index.ntotal >= 1000
            and dead > TOMBSTONE_WARNING * self._index.ntotal
        ):
            self._tombstone_warned = True
            log.warning(
                "%s: %d of %d indexed templates are deleted (kept as tombstones by %s); "
                "searches slow down: run Gallery.compact() or `npcface gallery compact`",
                self.path,
                dead,
                self._index.ntotal,
                self._factory,
            )

    def refresh(self) -> int:
        """Catch up with changes another process committed since this gallery was opened
        (for ``readonly`` galleries next to a writer). Returns the number of changes."""
        with self._mutex:
            self._check_open()
            changes = self._catch_up()
            self._apply_params()
            return changes

    def set_search_params(self, **params: int | None) -> None:
        """Override search parameters (``efSearch``, ``nprobe``); ``None`` restores the default.

        Raises:
            GalleryError: the parameter does not apply to the current index.
        """
        with self._mutex:
            self._writable()
            overrides = dict(self._store.meta("search_params") or {})
            for name, value in params.items():
                if value is None:
                    overrides.pop(name, None)
                    continue
                spec = str(self._store.meta("index_spec"))
                _check_param(name, value, _allowed_params(spec, self._factory, self.dim), spec)
                overrides[name] = int(value)
            self._store.set_meta(search_params=overrides)
            self._apply_params()
            self._gpu_index = None

    def save(self) -> None:
        """Write the index to disk atomically if it changed since the last save."""
        with self._mutex:
            self._writable()
            if not self._dirty:
                return
            self._saved_snapshot = ix.save_index(
                self._index,
                self.path,
                factory=self._factory,
                last_template_id=self._covered_tid,
                deletion_seq=self._covered_seq,
            )
            self._dirty = False
            self._store.prune_deletions(self._covered_seq)

    def rebuild(self, index: str | None = None) -> None:
        """Rebuild the index from the database, optionally as another index type.

        Args:
            index: ``auto`` or a FAISS factory string to switch to; ``None`` keeps the
                current choice.
        """
        with self._mutex:
            self._writable()
            if index is not None:
                spec = ix.AUTO if index.strip().lower() == ix.AUTO else index.strip()
                if spec != ix.AUTO:
                    ix.canonical_factory(spec, self.dim)
                self._store.set_meta(index_spec=spec, search_params={})
            spec = str(self._store.meta("index_spec"))
            self._rebuild(ix.target_factory(spec, self._n_live, self.dim))

    def compact(self, vacuum: bool = True) -> None:
        """Drop tombstones by rebuilding the index, and optionally shrink the database file.

        ``auto`` galleries may move back to a smaller index type here.
        """
        with self._mutex:
            self._writable()
            spec = str(self._store.meta("index_spec"))
            self._rebuild(ix.target_factory(spec, self._n_live, self.dim))
            if vacuum:
                self._store.vacuum()

    # ------------------------------------------------------------------ reads
    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        """The ``k`` most similar identities for each query.

        Each identity appears once, scored by its best template (several templates of one
        person never crowd out other people).

        Args:
            queries: (d,) or (n, d) query embeddings.
            k: identities per query (fewer if the gallery holds fewer).

        Returns:
            One list per query, most similar first.

        Raises:
            GalleryError: wrong dimension, non-finite or zero vectors, or ``k < 1``.
        """
        q = self._prepare(queries, "queries")
        if int(k) != k or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        with self._mutex:
            self._check_open()
            if self._n_identities == 0:
                return [[] for _ in range(len(q))]
            want = min(k, self._n_identities)
            idents, sims, tids = self._search_identities(q, want)
            records = self._store.identity_records(np.unique(idents[idents >= 0]).tolist())
        out: list[list[Match]] = []
        for r in range(len(q)):
            row: list[Match] = []
            for j in range(want):
                ident = int(idents[r, j])
                if ident < 0:
                    break
                name, meta = records[ident]
                row.append(
                    Match(
                        identity=name,
                        similarity=float(sims[r, j]),
                        template_id=int(tids[r, j]),
                        metadata=dict(meta) if meta is not None else None,
                    )
                )
            out.append(row)
        return out

    def identify(self, query: np.ndarray, threshold: float) -> Match | None:
        """Open-set identification: the best identity if it is similar enough, else ``None``.

        Args:
            query: (d,) embedding.
            threshold: minimum similarity to accept (e.g. the model's verification
                threshold). Lower accepts more strangers as someone enrolled.
        """
        if self.metric == "cosine":
            threshold = check_threshold(threshold)
        q = np.asarray(query)
        if q.ndim != 1:
            raise GalleryError(f"identify takes one (d,) embedding, got shape {q.shape}")
        best = self.search(q, k=1)[0]
        if best and best[0].similarity >= float(threshold):
            return best[0]
        return None

    def _search_identities(
        self, q: np.ndarray, want: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top ``want`` identities per query as (identity ids, similarities, template ids).

        Searches ``want`` x (index vectors per identity) templates, collapses them by identity
        keeping each identity's best template, and searches deeper for the queries that
        did not reach ``want`` distinct live identities (many templates of one person, or
        tombstones).
        """
        nq = len(q)
        ntotal = int(self._index.ntotal)
        if ntotal == 0:
            want = 0
        idents = np.full((nq, want), -1, dtype=np.int64)
        sims = np.zeros((nq, want), dtype=np.float32)
        tids = np.full((nq, want), -1, dtype=np.int64)
        per_identity = math.ceil(ntotal / max(self._n_identities, 1))
        kk = min(ntotal, want * per_identity + min(want, 8))
        pending = np.arange(nq) if want else np.zeros(0, np.int64)
        while pending.size:
            dist, labels = self._raw_search(q[pending], kk)
            owners = self._owners_of(labels)
            again = []
            for row, qi in enumerate(pending):
                valid = np.flatnonzero(owners[row] >= 0)
                _, first = np.unique(owners[row, valid], return_index=True)
                pos = valid[np.sort(first)[:want]]
                exhausted = kk >= ntotal or labels[row, -1] < 0
                if pos.size < want and not exhausted:
                    again.append(qi)
                    continue
                n = pos.size
                idents[qi, :n] = owners[row, pos]
                sims[qi, :n] = dist[row, pos]
                tids[qi, :n] = labels[row, pos]
            pending = np.array(again, dtype=np.int64)
            kk = min(ntotal, kk * 4)
        return idents, sims, tids

    def _owners_of(self, labels: np.ndarray) -> np.ndarray:
        ok = (labels >= 0) & (labels < self._owner.size)
        out = np.full(labels.shape, -1, dtype=np.int64)
        out[ok] = self._owner[labels[ok]]
        return out

    def _raw_search(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index
        plan = ix.gpu_plan(
            self._factory,
            num_gpus=ix.gpu_count(),
            k=kk,
            nprobe=self._effective_params().get("nprobe"),
        )
        if plan.use:  # pragma: no cover - needs faiss-gpu and a GPU
            if self._gpu_index is None:
                self._gpu_index = ix.clone_to_gpu(self._index)
            if self._gpu_index is not None:
                index = self._gpu_index
        if len(q) == 1:
            with ix.single_thread():
                return index.search(q, kk)
        return index.search(q, kk)

    def _prepare(self, x: Any, what: str, store: bool = False) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise GalleryError(f"{what} must be (d,) or (n, d), got shape {arr.shape}")
        if arr.shape[1] != self.dim:
            model = self._store.meta("model")
            raise GalleryError(
                f"{what} have dimension {arr.shape[1]}, but the gallery at {self.path} holds "
                f"{self.dim}-dimensional vectors"
                + (f" (model {model})" if model else "")
                + "; use the same embedding model for enrolment and search"
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise GalleryError(f"{what} must be numeric, got dtype {arr.dtype}")
        arr = np.array(arr, dtype=np.float32, order="C")
        if len(arr):
            try:  # the one embedding rule (npcface.validate), as verify and compare apply it
                check_embeddings(arr, what=what)
            except EmbeddingError as exc:
                raise GalleryError(str(exc)) from None
        if self.metric == "cosine" and len(arr):
            arr /= np.linalg.norm(arr, axis=1, keepdims=True)
        if store and self._store.dtype != np.float32:
            arr = arr.astype(self._store.dtype).astype(np.float32)  # what the database keeps
        return arr

    def __len__(self) -> int:
        """Number of enrolled identities."""
        return self._n_identities

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and self._store.has_identity(identity)

    def identities(self) -> list[str]:
        """Names of every enrolled identity, in enrolment order."""
        with self._mutex:
            return self._store.identity_names()

    def template_counts(self) -> dict[str, int]:
        """Number of templates of every identity, in enrolment order."""
        with self._mutex:
            return dict(self._store.template_counts())

    def templates(self, identity: str) -> list[int]:
        """Template ids of an identity ([] if unknown)."""
        with self._mutex:
            return [t for t, _, _ in self._store.identity_templates(identity)]

    def content_hashes(self) -> set[str]:
        """Content hashes recorded with enrolled templates (for resumable enrolment)."""
        with self._mutex:
            return self._store.content_hashes()

    @property
    def model(self) -> str | None:
        """Name of the embedding model the gallery is for, if recorded."""
        value = self._store.meta("model")
        return str(value) if value is not None else None

    def set_model(self, name: str) -> None:
        """Record the embedding model's name (done by the first recogniser enrolment)."""
        with self._mutex:
            self._writable()
            self._store.set_meta(model=str(name))

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def factory(self) -> str:
        """The FAISS factory string of the index in use."""
        return self._factory

    @property
    def tombstones(self) -> int:
        """Deleted templates still held by the index (0 for indexes that remove for real)."""
        if self._index is None:
            return 0
        return max(int(self._index.ntotal) - self._n_live, 0)

    def info(self) -> GalleryInfo:
        """Settings and size of the gallery."""
        with self._mutex:
            counts = self._store.counts()
            plan = ix.gpu_plan(
                self._factory,
                num_gpus=ix.gpu_count(),
                k=5,
                nprobe=self._effective_params().get("nprobe"),
            )
            disk = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
            return GalleryInfo(
                path=str(self.path),
                dim=self.dim,
                metric=self.metric,
                dtype=str(self._store.meta("dtype")),
                index_spec=str(self._store.meta("index_spec")),
                factory=self._factory,
                search_params=self._effective_params(),
                identities=counts.identities,
                templates=counts.templates,
                index_vectors=int(self._index.ntotal),
                tombstones=self.tombstones,
                removable=self._traits.removable,
                device="gpu" if plan.use else "cpu",
                device_reason=plan.reason,
                model=self.model,
                index_saved=not self._dirty,
                schema_version=SCHEMA_VERSION,
                disk_bytes=int(disk),
                created=float(self._store.meta("created", 0.0)),
            )

    def check(self) -> ConsistencyReport:
        """Compare the index's ids with the database's live templates (O(n))."""
        with self._mutex:
            in_index = ix.index_ids(self._index)
            live, _ = self._store.template_owners()
            uniq, counts = np.unique(in_index, return_counts=True)
            duplicates = int(np.count_nonzero(counts > 1))
            missing = np.setdiff1d(live, uniq)
            unexpected = np.setdiff1d(uniq, live)
            ok = missing.size == 0 and duplicates == 0
            if self._traits.removable:
                ok = ok and unexpected.size == 0
            return ConsistencyReport(
                ok=bool(ok),
                missing=tuple(int(i) for i in missing[:100]),
                unexpected=tuple(int(i) for i in unexpected[:100]),
                duplicates=duplicates,
            )

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Save the index if it changed, release the lock, close the database (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            try:
                if not self._readonly and self._dirty and self._index is not None:
                    self.save()
            finally:
                self._release()

    def _release(self) -> None:
        self._closed = True
        self._store.close()
        if self._writer_lock is not None:
            self._writer_lock.release()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Gallery({str(self.path)!r}, identities={self._n_identities}, "
            f"templates={self._n_live}, index={self._factory!r})"
        )

    def _writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise GalleryError(f"{self.path}: gallery opened read-only; open it without readonly")

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"{self.path}: gallery is closed")


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
    if name not in ("efSearch", "nprobe", "k_factor"):
        raise GalleryError(f"unknown search parameter {name!r}; use efSearch, nprobe or k_factor")
    try:
        ok = int(value) >= 1 and int(value) == value
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise GalleryError(f"{name} must be a positive integer, got {value!r}")
    if name not in allowed:
        raise GalleryError(
            f"{name} does not apply to index {spec!r} "
            f"(it takes {', '.join(allowed) or 'no parameters'})"
        )


def _check_dim(dim: Any) -> int:
    try:
        value = int(dim)
    except (TypeError, ValueError):
        raise GalleryError(f"dim must be a positive integer, got {dim!r}") from None
    if value != dim or value < 1:
        raise GalleryError(f"dim must be a positive integer, got {dim!r}")
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GalleryError(f"identity names must be non-empty strings, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"identity name longer than {MAX_NAME_LENGTH} characters")
    return name
