"""Index upkeep: keep a local gallery's FAISS index (a cache) in step with its database.

:class:`IndexKeeper` loads the saved index and catches it up, applies committed additions
and deletions, rebuilds it (damaged, another type, compaction), switches type as the gallery
grows, saves it atomically, sets its search parameters, and places searches on a GPU copy
when that helps. It keeps the :class:`~npcface.gallery.idmap.IdMap` in step with the index.
Which index and how FAISS is driven is :mod:`npcface.gallery.index`; when to do what is here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faiss
import numpy as np

from . import index as ix
from .idmap import IdMap
from .store import Store

log = logging.getLogger(__name__)

TOMBSTONE_WARNING = 0.25
"""Warn (once per session) when more than this fraction of the index is deleted templates."""


class IndexNewerError(ix.IndexFileError):
    """The saved index covers templates or deletions the database (as read) does not have."""


class IndexKeeper:
    """A gallery's FAISS index and the bookkeeping that ties it to the database.

    The index covers every template with id <= :attr:`covered_tid` and every deletion with
    sequence number <= :attr:`covered_seq`. A writer saves it (and prunes the deletion log);
    a reader (``readonly``) only ever changes it in memory and follows the writer's choice of
    index type. Not thread-safe by itself.
    """

    def __init__(self, path: Path, store: Store, ids: IdMap, *, readonly: bool) -> None:
        self.path = path
        self.store = store
        self.ids = ids
        self.readonly = readonly
        self.dim = store.dim
        self.index: faiss.Index | None = None
        self.factory = str(store.meta("factory"))
        self.followed_factory = self.factory  # reader: the writer's factory last adopted
        self.covered_tid = 0
        self.covered_seq = 0
        self.dirty = False
        self.saved: ix.IndexSnapshot | None = None
        self._gpu_index: faiss.Index | None = None
        self._tombstone_warned = False

    # ------------------------------------------------------------------ facts
    @property
    def traits(self) -> ix.IndexTraits:
        return ix.traits(self.factory, self.dim)

    @property
    def ntotal(self) -> int:
        """Vectors in the index, tombstones included."""
        return int(self.index.ntotal) if self.index is not None else 0

    @property
    def tombstones(self) -> int:
        """Deleted templates still held by the index (0 for indexes that remove for real)."""
        return max(self.ntotal - self.ids.templates, 0) if self.index is not None else 0

    def effective_params(self) -> dict[str, int]:
        """Default search parameters for the index and size, with the stored overrides."""
        params = ix.default_search_params(self.factory, max(self.ids.templates, 1), self.dim)
        overrides = self.store.meta("search_params") or {}
        applicable = self.traits.params
        params.update({k: int(v) for k, v in overrides.items() if k in applicable})
        return params

    def apply_params(self) -> None:
        params = self.effective_params()
        if params:
            ix.apply_search_params(self.index, params)
        self._gpu_index = None

    def gpu_plan(self, k: int) -> ix.GpuPlan:
        return ix.gpu_plan(
            self.factory,
            num_gpus=ix.gpu_count(),
            k=k,
            nprobe=self.effective_params().get("nprobe"),
        )

    def counts_ok(self) -> bool:
        ntotal = self.ntotal
        live = self.ids.templates
        return ntotal == live if self.traits.removable else ntotal >= live

    # --------------------------------------------------------------- loading
    def load_ids(self) -> None:
        self.ids.reset(*self.store.template_owners(), self.store.high_water()[0])

    def load(self, on_bad_index: str, *, newer_is_error: bool = False) -> None:
        """Load the saved index and catch it up, or rebuild it (see the gallery README).

        Args:
            on_bad_index: ``rebuild`` or ``raise``.
            newer_is_error: raise :class:`IndexNewerError` when the saved index is newer
                than the database as read (a reader whose snapshot predates the writer's
                last save retries with a fresh snapshot instead of rebuilding).

        Raises:
            IndexFileError: the saved index is unusable and ``on_bad_index == "raise"``.
        """
        self.load_ids()
        counts = self.store.counts()
        if counts.max_template_id == 0 and not (self.path / ix.SIDECAR_NAME).exists():
            self.rebuild(self.factory)  # a new gallery: nothing to load yet
            return
        try:
            index, snap = ix.load_index(self.path, dim=self.dim)
            if snap.factory != self.factory:
                raise ix.IndexFileError(
                    f"{self.path}: saved index is {snap.factory!r}, the gallery uses {self.factory!r}"
                )
            if (
                snap.last_template_id > counts.max_template_id
                or snap.deletion_seq > counts.max_deletion_seq
            ):
                raise IndexNewerError(
                    f"{self.path}: saved index is newer than the database (was the database "
                    "restored from an older copy?)"
                )
        except ix.IndexFileError as exc:
            if on_bad_index == "raise" or (newer_is_error and isinstance(exc, IndexNewerError)):
                raise
            log.warning("%s; rebuilding the index from the database", exc)
            self.rebuild(self.factory)
            return
        self.index = index
        self.covered_tid = snap.last_template_id
        self.covered_seq = snap.deletion_seq
        self.saved = snap
        self.apply_params()
        caught = self.catch_up()
        if not self.counts_ok():
            log.warning("%s: index does not match the database; rebuilding it", self.path)
            self.rebuild(self.factory)
            return
        if caught:
            log.info("%s: index caught up with %d database changes", self.path, caught)
        if not self.readonly:  # readers follow the writer's choice of index
            self.maybe_upgrade()
            if self.dirty:
                self.save()

    # ----------------------------------------------------------- catching up
    def catch_up(self) -> int:
        """Apply deletions and additions the index has not seen. Returns how many."""
        max_tid, max_seq = self.store.high_water()
        changes = 0
        if self.store.deletion_log_complete_after(self.covered_seq):
            deleted = self.store.deletions_after(self.covered_seq)
        else:  # the writer saved and pruned the log past us: compare with the live templates
            live, owners = self.store.template_owners()
            deleted = np.setdiff1d(ix.index_ids(self.index), live)
            self.ids.reset(live, owners, max_tid)
        if deleted.size:
            changes += int(deleted.size)
            if self.traits.removable:
                self.index.remove_ids(deleted)
            self.ids.remove(deleted)
        for tids, owners, vecs in self.store.iter_vectors(self.covered_tid, upto=max_tid):
            self.index.add_with_ids(vecs, tids)
            self.ids.add(tids, owners)
            changes += len(tids)
        if changes or (max_tid, max_seq) != (self.covered_tid, self.covered_seq):
            self.dirty = True
            self._gpu_index = None
        self.covered_tid = max_tid
        self.covered_seq = max_seq
        return changes

    def follow(self) -> int:
        """Reader: apply what the writer committed (settings, index type, templates).

        Call inside the store's read snapshot. Returns the number of template changes.
        """
        self.store.reload_meta()
        factory = str(self.store.meta("factory"))
        # the writer may have rebuilt the index as another type meanwhile
        changes = self._adopt(factory) if factory != self.followed_factory else self.catch_up()
        self.apply_params()
        return changes

    def _adopt(self, factory: str) -> int:
        """Reader: switch to the writer's new index type, from its saved file if that
        matches the pinned database state, else by building it in memory."""
        self.followed_factory = factory
        max_tid, max_seq = self.store.high_water()
        try:
            index, snap = ix.load_index(self.path, dim=self.dim)
            usable = (
                snap.factory == factory
                and snap.last_template_id <= max_tid
                and snap.deletion_seq <= max_seq
            )
        except ix.IndexFileError:
            usable = False
        if not usable:
            self.rebuild(factory)
            return self.ids.templates
        self.index, self.factory = index, factory
        self.covered_tid, self.covered_seq = snap.last_template_id, snap.deletion_seq
        self.load_ids()
        self.apply_params()
        changes = self.catch_up()
        if not self.counts_ok():
            self.rebuild(factory)
        return changes

    # ------------------------------------------------------------ mutations
    def append(self, tids: np.ndarray, owners: np.ndarray, vecs: np.ndarray) -> None:
        """Index templates the database has just committed (in id order)."""
        self.ids.add(tids, owners)
        try:
            if tids[0] == self.covered_tid + 1:
                self.index.add_with_ids(vecs, tids)
                self.covered_tid = int(tids[-1])
                self.dirty = True
                self._gpu_index = None
            else:
                self.catch_up()
            self.maybe_upgrade()
            self.apply_params()  # defaults depend on the size
        except Exception:
            # the templates are stored; the in-memory index is not trustworthy any more
            log.exception("%s: index update failed; it will be rebuilt", self.path)
            self.rebuild(self.factory)

    def forget(self, tids: np.ndarray) -> None:
        """Drop templates the database has just deleted."""
        if tids.size:
            self.ids.remove(tids)
            if self.traits.removable:
                self.index.remove_ids(tids)
            self.dirty = True
            self._gpu_index = None
        self.covered_seq = self.store.high_water()[1]
        dead = self.tombstones
        if (
            not self._tombstone_warned
            and self.index.ntotal >= 1000
            and dead > TOMBSTONE_WARNING * self.index.ntotal
        ):
            self._tombstone_warned = True
            log.warning(
                "%s: %d of %d indexed templates are deleted (kept as tombstones by %s); "
                "searches slow down: run Gallery.compact() or `npcface gallery compact`",
                self.path,
                dead,
                self.index.ntotal,
                self.factory,
            )

    def erase(self) -> None:
        """Leave no deleted template in the saved index (a writer, after a removal). An index
        that removes for real is saved as it is; one that keeps tombstones (HNSW, the PQ
        tiers) would keep the deleted vectors in memory and in its file, so it is emptied and
        filled again with the live templates (its training kept), then saved: O(n)."""
        if not self.traits.removable and self.tombstones:
            t0 = time.perf_counter()
            index = faiss.clone_index(self.index)
            index.reset()
            counts = self.store.counts()
            self.load_ids()
            for tids, _, vecs in self.store.iter_vectors(0, upto=counts.max_template_id):
                index.add_with_ids(vecs, tids)
            self.index = index
            self.covered_tid = counts.max_template_id
            self.covered_seq = counts.max_deletion_seq
            self._gpu_index = None
            self.apply_params()
            self.dirty = True
            log.info(
                "%s: re-indexed %d templates without the deleted ones in %.1f s",
                self.path,
                index.ntotal,
                time.perf_counter() - t0,
            )
        self.save()

    def rebuild(self, factory: str) -> None:
        """Build ``factory`` from every live template in the database; a writer saves it."""
        t0 = time.perf_counter()
        counts = self.store.counts()
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
            sample = self.store.sample_ids(
                ix.training_sample_size(factory, self.dim, counts.templates)
            )
            ix.train_index(index, self.store.vectors(sample))
        self.load_ids()
        for tids, _, vecs in self.store.iter_vectors(0, upto=counts.max_template_id):
            index.add_with_ids(vecs, tids)
        self.index = index
        self.factory = factory
        self.covered_tid = counts.max_template_id
        self.covered_seq = counts.max_deletion_seq
        self.dirty = True
        self._tombstone_warned = False
        self.apply_params()
        log.info(
            "%s: built %s over %d templates in %.1f s",
            self.path,
            factory,
            index.ntotal,
            time.perf_counter() - t0,
        )
        if not self.readonly:
            if self.store.meta("factory") != factory:
                self.store.set_meta(factory=factory)
            self.save()

    def maybe_upgrade(self) -> None:
        """Switch index type when the gallery has grown past the current one."""
        spec = str(self.store.meta("index_spec"))
        live = self.ids.templates
        target = ix.target_factory(spec, live, self.dim)
        if target == self.factory or ix.traits(target, self.dim).min_train > live:
            return
        if spec == ix.AUTO:
            upgrade = ix.tier(target) > ix.tier(self.factory)
        else:
            upgrade = self.factory == ix.FLAT_FACTORY
        if upgrade:
            log.info(
                "%s: %d templates: switching index %s -> %s", self.path, live, self.factory, target
            )
            self.rebuild(target)

    def save(self) -> None:
        """Write the index atomically if it changed; then forget the deletions it absorbed."""
        if not self.dirty:
            return
        self.saved = ix.save_index(
            self.index,
            self.path,
            factory=self.factory,
            last_template_id=self.covered_tid,
            deletion_seq=self.covered_seq,
        )
        self.dirty = False
        self.store.prune_deletions(self.covered_seq)

    # --------------------------------------------------------------- search
    def search(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw template search: (similarities, template ids), each (n, kk)."""
        index = self.index
        if self.gpu_plan(kk).use:  # pragma: no cover - needs faiss-gpu and a GPU
            if self._gpu_index is None:
                self._gpu_index = ix.clone_to_gpu(self.index)
            if self._gpu_index is not None:
                index = self._gpu_index
        if len(q) == 1:
            with ix.single_thread():
                return index.search(q, kk)
        return index.search(q, kk)
