"""Embeddings in, groups out: :func:`cluster_embeddings` and the incremental
:class:`Clusterer`.

The method, chosen by measurement (``bench/cluster.py``; figures in ``docs/clustering.md``):
average linkage over a FAISS k-nearest-neighbour graph (:mod:`.graph`, :mod:`.linkage`) with
merge thresholds calibrated from impostor statistics (:mod:`.thresholds`), each face's set by
its own neighbourhood's density (:mod:`.density`; ``density=False``: scaled with the
collection's size alone). Faces left alone are noise (label -1), never forced into a group; so
are faces below a quality gate, which are not clustered at all.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..validate import check_embeddings, check_threshold
from . import density as dn
from .calibration import calibration_for
from .graph import (
    DEFAULT_K,
    EXACT_MAX,
    NeighbourIndex,
    graph_factory,
    knn_graph,
    knn_table,
    table_edges,
)
from .linkage import average_linkage
from .thresholds import ClusterCalibration, Thresholds

log = logging.getLogger(__name__)

NOISE = -1
"""The label of faces in no group."""

REFIT_GROWTH = 1.25
""":meth:`Clusterer.add` clusters everything again once the collection has grown by this
factor since the last full clustering. Thresholds rise with the collection's size, and
groups merged under the lower thresholds of a smaller collection are never split by an
incremental update. On LFW in random orders (``bench/cluster.py --incremental``, two
seeds), adding in batches of 500 to 1,233 faces from a first part of 1,000 to 12,000 agreed
with one full run at BCubed F 99.82 to 99.99 (one clustering scored against the other) with
this refit, at 99.35 to 99.64 without it (from 1,000 faces: pairwise F 98.86 instead of
99.82)."""


@dataclass(frozen=True)
class Constraints:
    """What people said about faces (see :mod:`npcface.cluster.linkage`).

    Attributes:
        tags: (N,) int64 person tag of each face, -1 for none: faces of one tag are one
            person (must-link) and faces of two tags are two people (cannot-link).
        cannot: (face row, tag) pairs: that face is not that person.
    """

    tags: np.ndarray
    cannot: tuple[tuple[int, int], ...] = ()

    @classmethod
    def none(cls, n: int) -> Constraints:
        return cls(np.full(n, -1, np.int64))


@dataclass(frozen=True)
class Clustering:
    """Groups of faces: the result of :func:`cluster_embeddings` or :class:`Clusterer`.

    Arrays are read-only.

    Attributes:
        labels: (N,) int64 group of each face: 0 is the largest group, then by size
            (ties: the group whose first face comes first); :data:`NOISE` (-1) for faces in
            no group (alone, or below the quality gate).
        sizes: (G,) faces in each group (all >= 2).
        representatives: (G,) row of each group's most typical face (the highest mean
            similarity to the group's faces).
        confidence: (N,) float32 mean cosine similarity of each face to the other faces of
            its group (the average linkage that holds it there; compare with
            ``thresholds.merge(1, size - 1)``, or with the density rule's bar at the face's
            ``local_size``); NaN for noise.
        low_quality: (N,) True for faces left out by the quality gate.
        thresholds: the size-scaled rule at the collection's size (``thresholds.n``: faces
            clustered); with the density rule (the default), the bars of a face whose
            neighbourhood is as dense as the calibration data's at that size.
        graph: the FAISS index of the neighbour graph (``"Flat"``: exact).
        tags: (G,) person tag of each group (-1: none), when constraints were given.
        local_size: (N,) float32 each face's local collection size, the density rule's
            measure of how densely strangers surround it (:mod:`npcface.cluster.density`;
            its bars are the size-scaled rule's at this size); NaN without the density rule
            (``density=False`` or a flat ``threshold``).
    """

    labels: np.ndarray
    sizes: np.ndarray
    representatives: np.ndarray
    confidence: np.ndarray
    low_quality: np.ndarray
    thresholds: Thresholds
    graph: str
    tags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    local_size: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.local_size is None:
            object.__setattr__(self, "local_size", np.full(len(self.labels), np.nan, np.float32))
        for name in (
            "labels",
            "sizes",
            "representatives",
            "confidence",
            "low_quality",
            "tags",
            "local_size",
        ):
            getattr(self, name).flags.writeable = False

    def __len__(self) -> int:
        """Number of faces."""
        return int(self.labels.shape[0])

    @classmethod
    def empty(cls, thresholds: Thresholds) -> Clustering:
        """The clustering of no faces."""
        z = np.zeros(0, np.int64)
        return cls(
            z, z.copy(), z.copy(), np.zeros(0, np.float32), np.zeros(0, bool), thresholds, "Flat"
        )

    @property
    def groups(self) -> int:
        """Number of groups (noise excluded)."""
        return int(self.sizes.shape[0])

    @property
    def noise(self) -> np.ndarray:
        """(N,) True for faces in no group."""
        return self.labels == NOISE

    def members(self, group: int) -> np.ndarray:
        """Rows of the faces of ``group``, ascending.

        Raises:
            InvalidArgumentError: no such group.
        """
        if not 0 <= int(group) < self.groups:
            raise InvalidArgumentError(f"no group {group} (groups: 0..{self.groups - 1})")
        return np.flatnonzero(self.labels == int(group))

    def summary(self) -> dict[str, Any]:
        """Counts for reports: faces, groups, grouped faces, noise, low quality, largest."""
        return {
            "faces": len(self),
            "groups": self.groups,
            "grouped": int((self.labels >= 0).sum()),
            "noise": int(self.noise.sum()),
            "low_quality": int(self.low_quality.sum()),
            "largest": int(self.sizes[0]) if self.groups else 0,
            "thresholds": self.thresholds.to_dict(),
            "graph": self.graph,
        }


def cluster_embeddings(
    embeddings: np.ndarray,
    *,
    quality: Sequence[float] | np.ndarray | None = None,
    min_quality: float | None = None,
    model: str | None = None,
    calibration: ClusterCalibration | None = None,
    threshold: float | None = None,
    constraints: Constraints | None = None,
    k: int = DEFAULT_K,
    density: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Clustering:
    """Group face embeddings into people.

    Args:
        embeddings: (N, d) embeddings of one model (normalised here).
        quality: (N,) face quality in [0, 1] (:class:`npcface.FaceQuality` ``overall``).
        min_quality: faces of lower ``quality`` are noise and not clustered.
        model: the embedding model (its shipped calibration is used; default: the default
            preset's recogniser, ``sface``).
        calibration: impostor statistics to use instead of the model's.
        threshold: one average-linkage threshold for every merge instead of the calibrated,
            size-aware rule (a cosine in [-1, 1]; for comparisons, not for everyday use).
        constraints: must-link tags and cannot-link pairs.
        k: neighbours per face in the graph.
        density: each face's bars set by its own neighbourhood (:mod:`.density`); False:
            the size-scaled bars alone, the same for every face (the rule before issue 25's
            density work). Ignored with ``threshold``.
        progress: called with (faces searched, faces) while the graph is built.

    Returns:
        A :class:`Clustering`.

    Raises:
        EmbeddingError: not (N, d) finite non-zero rows.
        InvalidArgumentError: a bad threshold, quality, k or constraints; no calibration for
            ``model``.
    """
    c = Clusterer(
        model=model,
        calibration=calibration,
        threshold=threshold,
        k=k,
        density=density,
        min_quality=min_quality,
        progress=progress,
    )
    return c.fit(embeddings, quality=quality, constraints=constraints)


class Clusterer:
    """Groups kept up to date as faces arrive: :meth:`fit` clusters everything, :meth:`add`
    places new faces without clustering the others again.

    :meth:`add` starts from the current groups: new faces join groups or each other by the
    same average-linkage rule, and groups they bridge may merge; groups are never split
    (a full :meth:`fit` may split what incremental updates joined; ``bench/cluster.py
    --incremental`` measures how far the two differ). Bars follow the collection's size at
    each call; with the density rule, new faces' local sizes are measured on arrival and
    the faces already held keep theirs; once the collection has grown
    :data:`REFIT_GROWTH` times since the last full clustering, :meth:`add` clusters
    everything again (or give ``expected_size``).

    Not safe to share between threads (one object per collection, one caller at a time).

    Args:
        model, calibration, threshold, k, density, min_quality, progress: as
            :func:`cluster_embeddings`.
        factory: FAISS index of the neighbour graph (default :func:`graph_factory` for the
            size at :meth:`fit`).
        expected_size: use the thresholds of at least this many faces from the start (a
            collection that will grow: incremental updates then match a full run closely).
        refit_growth: growth since the last full clustering at which :meth:`add` clusters
            everything again (None: never).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        calibration: ClusterCalibration | None = None,
        threshold: float | None = None,
        k: int = DEFAULT_K,
        density: bool = True,
        min_quality: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        factory: str | None = None,
        expected_size: int | None = None,
        refit_growth: float | None = REFIT_GROWTH,
    ) -> None:
        self.calibration = calibration if calibration is not None else calibration_for(model)
        self.threshold = None if threshold is None else check_threshold(threshold)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"k must be a positive int, got {k!r}", input="k")
        self.k = int(k)
        self.density = bool(density) and self.threshold is None
        if min_quality is not None and not 0.0 <= float(min_quality) <= 1.0:
            raise InvalidArgumentError(
                f"min_quality must be in [0, 1], got {min_quality!r}", input="min_quality"
            )
        self.min_quality = None if min_quality is None else float(min_quality)
        self.progress = progress
        self.factory = factory
        if expected_size is not None and (
            isinstance(expected_size, bool) or not isinstance(expected_size, (int, np.integer))
        ):
            raise InvalidArgumentError(
                f"expected_size must be an int, got {expected_size!r}", input="expected_size"
            )
        self.expected_size = None if expected_size is None else int(expected_size)
        if refit_growth is not None and not float(refit_growth) > 1.0:
            raise InvalidArgumentError(
                f"refit_growth must be above 1 or None, got {refit_growth!r}",
                input="refit_growth",
            )
        self.refit_growth = None if refit_growth is None else float(refit_growth)
        self._reset()

    def _reset(self) -> None:
        self._fitted_at = 0
        self._x = np.zeros((0, 0), np.float32)
        self._low = np.zeros(0, bool)
        self._raw = np.zeros(0, np.int64)  # group id per row: its group's first row
        self._log_size = np.zeros(0, np.float64)  # density rule: log10 local size per row
        self._applied = np.zeros(0, np.float64)  # the local sizes the last linkage used
        self._first = np.zeros(0, np.float64)  # first-pass log10 local sizes
        self._uncapped = np.zeros(0, np.float64)  # ... before the first pass's cap
        self._cap = math.inf  # the first pass's latest cap of local sizes
        self._index: NeighbourIndex | None = None
        self._result: Clustering | None = None

    # ------------------------------------------------------------------ state
    @property
    def clustering(self) -> Clustering | None:
        """The latest result (None before :meth:`fit`)."""
        return self._result

    def __len__(self) -> int:
        return int(self._x.shape[0])

    @property
    def fitted_at(self) -> int:
        """Faces at the last full clustering (0: none yet)."""
        return self._fitted_at

    def restore(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        quality: Sequence[float] | np.ndarray | None = None,
        fitted_at: int | None = None,
    ) -> None:
        """Take up a collection grouped before (in another process): its embeddings and
        its groups, for :meth:`add`.

        Args:
            embeddings: (N, d) the faces.
            labels: (N,) a group id per face (faces of one id are one group; give noise
                faces ids of their own).
            quality: (N,) face quality, for ``min_quality``.
            fitted_at: faces at the last full clustering (default N).

        With the density rule, each face's local size is measured again (a neighbour search
        of every face, as long as a full clustering's graph): faces of one label are one
        group.
        """
        x = _unit_rows(embeddings)
        n, dim = x.shape
        labels = np.asarray(labels, np.int64)
        if labels.shape != (n,):
            raise InvalidArgumentError(
                f"labels must be {n} ints, got {labels.shape}", input="labels"
            )
        self._x = x
        self._low = self._low_quality(quality, n)
        self._index = NeighbourIndex(dim, self.factory or graph_factory(n, dim))
        self._index.add(x)
        _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
        self._raw = first[inv.reshape(-1)].astype(np.int64)
        self._fitted_at = n if fitted_at is None else int(fitted_at)
        self._result = None
        self._log_size = np.full(n, np.nan)
        if self.density and n:
            rows = np.arange(n, dtype=np.int64)
            sims, ids = knn_table(x, k=self._table_k(), index=self._index)
            self._first, self._uncapped, self._cap = self._first_sizes(sims, ids, n)
            self._log_size = self._refined_sizes(sims, ids, rows, n, self._raw, self._first)
        self._applied = self._log_size.copy()

    def thresholds(self, n: int) -> Thresholds:
        """The size-scaled merge rule for ``n`` faces (at least ``expected_size``); with the
        density rule, its eps (:data:`npcface.cluster.density.STRANGERS_PER_FACE`): the
        bars of a face whose local size is ``n``."""
        n = max(int(n), self.expected_size or 0)
        if self.threshold is not None:
            t = self.threshold
            return Thresholds(n=n, pair=t, floor=t, mean=self.calibration.mean, rho=1.0)
        return self.calibration.thresholds(n, dn.STRANGERS_PER_FACE if self.density else None)

    # ------------------------------------------------------------------ density rule
    def _table_k(self) -> int:
        return max(self.k, dn.BACKGROUND_RANK)

    def _first_sizes(
        self, sims: np.ndarray, ids: np.ndarray, n: int, also: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """First-pass log10 local sizes (every neighbour counts), before the cap, and the
        cap (:func:`npcface.cluster.density.first_log_sizes`)."""
        size = max(int(n), self.expected_size or 0)
        return dn.first_log_sizes(
            sims, ids, self.calibration, size, rank=dn.BACKGROUND_RANK, also=also
        )

    def _refined_sizes(
        self,
        sims: np.ndarray,
        ids: np.ndarray,
        rows: np.ndarray,
        n: int,
        group: np.ndarray,
        first: np.ndarray,
    ) -> np.ndarray:
        """log10 local sizes of ``rows`` counting only strangers outside ``group``,
        uncapped; ``first`` (their first-pass sizes) where too few strangers are seen."""
        return dn.local_log_sizes(
            sims,
            ids,
            self.calibration,
            max(int(n), self.expected_size or 0),
            rows=rows,
            group=group,
            rank=dn.BACKGROUND_RANK,
            cap=math.inf,
            fallback=first,
        )

    def _density_passes(
        self,
        x: np.ndarray,
        sims: np.ndarray,
        ids: np.ndarray,
        rows: np.ndarray,
        log_size: np.ndarray,
        start: np.ndarray,
        cons: Constraints,
        low: np.ndarray,
        extra: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, int]:
        """The density rule's passes over the neighbour table of ``rows`` (all faces at a
        full clustering, the new ones in :meth:`add`); ``log_size`` holds the other rows'
        local sizes and receives those of ``rows``. Returns (raw groups, edges of the last
        pass); sets ``self._first`` and ``self._uncapped`` for ``rows``."""
        n = len(x)
        rule = dn.LocalRule(
            self.calibration, max(n, self.expected_size or 0), dn.STRANGERS_PER_FACE
        )
        full = len(rows) == n
        first, uncapped, self._cap = self._first_sizes(
            sims, ids, n, None if full else self._uncapped
        )
        if full:
            self._first, self._uncapped = first, uncapped
        else:
            self._first = np.concatenate([self._first, first])
            self._uncapped = np.concatenate([self._uncapped, uncapped])
        raw = start
        edges = 0
        for p in range(1 + dn.REFINE_PASSES):
            log_size[rows] = (
                first if p == 0 else self._refined_sizes(sims, ids, rows, n, raw, first)
            )
            # an edge is dropped below the lower of its two faces' lowest bars (the bars
            # rise with the local size)
            lowest = rule.lowest(log_size)
            floor = np.minimum(lowest[rows][:, None], lowest[np.where(ids >= 0, ids, 0)])
            g = table_edges(sims, ids, rows, floor)
            a, b = g.a, g.b
            if extra is not None:
                a, b = np.concatenate([a, extra[0]]), np.concatenate([b, extra[1]])
            a, b = _without(a, b, low)
            edges = len(a)
            raw = average_linkage(
                x,
                a,
                b,
                rule.merge,
                labels=start,
                tags=cons.tags,
                cannot=cons.cannot,
                density=log_size,
            )
        return raw, edges

    # ------------------------------------------------------------------ clustering
    def fit(
        self,
        embeddings: np.ndarray,
        quality: Sequence[float] | np.ndarray | None = None,
        constraints: Constraints | None = None,
    ) -> Clustering:
        """Cluster ``embeddings`` from scratch (replacing whatever this object held).

        Args:
            embeddings: (N, d) embeddings.
            quality: (N,) face quality, for ``min_quality``.
            constraints: over the N faces.

        Returns:
            The :class:`Clustering` of the N faces.
        """
        x = _unit_rows(embeddings)
        n = len(x)
        low, cons = self._low_quality(quality, n), _check_constraints(constraints, n)
        if n == 0:  # no faces, no groups
            self._reset()
            self._result = Clustering.empty(self.thresholds(1))
            return self._result
        return self._fit(x, low, cons)

    def _fit(self, x: np.ndarray, low: np.ndarray, cons: Constraints) -> Clustering:
        n, dim = x.shape
        self._x = x
        self._low = low
        t0 = time.perf_counter()
        self._index = NeighbourIndex(dim, self.factory or graph_factory(n, dim))
        self._index.add(x)
        t1 = time.perf_counter()
        th = self.thresholds(n)
        rows = np.arange(n, dtype=np.int64)
        if self.density:
            sims, ids = knn_table(x, k=self._table_k(), index=self._index, progress=self.progress)
            t2 = time.perf_counter()
            log_size = np.full(n, np.nan)
            self._raw, edges = self._density_passes(
                x, sims, ids, rows, log_size, _start(cons.tags), cons, low
            )
            self._applied = log_size.copy()
            # what the next pass (or an update) would use: strangers outside the groups
            self._log_size = self._refined_sizes(sims, ids, rows, n, self._raw, self._first)
            del sims, ids
        else:
            graph = knn_graph(
                x, k=self.k, min_sim=th.lowest, index=self._index, progress=self.progress
            )
            t2 = time.perf_counter()
            a, b = _without(graph.a, graph.b, low)
            edges = len(a)
            self._raw = average_linkage(
                x, a, b, th, labels=_start(cons.tags), tags=cons.tags, cannot=cons.cannot
            )
            self._log_size = self._applied = np.full(n, np.nan)
        self._fitted_at = n
        self._result = self._finish(th, cons)
        log.info(
            "clustered %d faces: index %s %.1f s, graph %.1f s, linkage (%d edges%s) %.1f s",
            n,
            self._index.factory,
            t1 - t0,
            t2 - t1,
            edges,
            f", {1 + dn.REFINE_PASSES} density passes" if self.density else "",
            time.perf_counter() - t2,
        )
        return self._result

    def add(
        self,
        embeddings: np.ndarray,
        quality: Sequence[float] | np.ndarray | None = None,
        constraints: Constraints | None = None,
    ) -> Clustering:
        """Place new faces into the current groups (or new ones) without clustering the
        others again. Before any :meth:`fit` this is :meth:`fit`.

        Args:
            embeddings: (M, d) new embeddings (rows N..N+M-1 of the collection).
            quality: (M,) their face quality.
            constraints: over all N + M faces (the old faces' tags as before, or more).

        Returns:
            The :class:`Clustering` of all N + M faces.
        """
        if self._index is None or len(self) == 0:
            return self.fit(embeddings, quality, constraints)
        x_new = _unit_rows(embeddings)
        if x_new.shape[1] != self._x.shape[1]:
            raise InvalidArgumentError(
                f"embeddings have {x_new.shape[1]} dimensions, the collection {self._x.shape[1]}",
                input="embeddings",
            )
        n_old, m = len(self), len(x_new)
        low_new = self._low_quality(quality, m)
        x = np.concatenate([self._x, x_new])
        low = np.concatenate([self._low, low_new])
        n = len(x)
        if self.refit_growth is not None and n > self.refit_growth * self._fitted_at:
            log.info(
                "collection grew from %d to %d faces: clustering all again", self._fitted_at, n
            )
            return self._fit(x, low, _check_constraints(constraints, n))
        cons = _check_constraints(constraints, n)
        self._index.add(x_new)
        th = self.thresholds(n)
        new_rows = np.arange(n_old, n, dtype=np.int64)
        start = np.concatenate([self._raw, new_rows])
        # faces tagged now that were grouped before: their group takes the tag
        tags = cons.tags
        if (tags >= 0).any():
            start = _start(tags, start)
        if self.density:
            sims, ids = knn_table(x, k=self._table_k(), queries=new_rows, index=self._index)
            log_size = np.concatenate([self._log_size, np.full(m, np.nan)])
            rule = dn.LocalRule(
                self.calibration, max(n, self.expected_size or 0), dn.STRANGERS_PER_FACE
            )
            # bridges: any new face's old neighbours above the lowest bar any face may have
            lowest = float(rule.lowest(np.log10(dn.MIN_COLLECTION)))
            hop = _bridges(ids, sims, new_rows, n_old, lowest)
            self._raw, _ = self._density_passes(
                x, sims, ids, new_rows, log_size, start, cons, low, extra=hop
            )
            self._applied = log_size.copy()
            log_size[new_rows] = self._refined_sizes(
                sims, ids, new_rows, n, self._raw, self._first[new_rows]
            )
            self._log_size = log_size
        else:
            sims, ids = knn_table(x, k=self.k, queries=new_rows, index=self._index)
            g = table_edges(sims, ids, new_rows, th.lowest)
            # groups a new face bridges: its best old neighbour against each other old one
            hop_a, hop_b = _bridges(ids, sims, new_rows, n_old, th.lowest)
            a, b = _without(np.concatenate([g.a, hop_a]), np.concatenate([g.b, hop_b]), low)
            self._raw = average_linkage(x, a, b, th, labels=start, tags=tags, cannot=cons.cannot)
            self._log_size = self._applied = np.full(n, np.nan)
        self._x, self._low = x, low
        self._result = self._finish(th, cons)
        return self._result

    # ------------------------------------------------------------------ helpers
    def _low_quality(self, quality: Any, n: int) -> np.ndarray:
        if quality is None or self.min_quality is None:
            return np.zeros(n, bool)
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
        if q.shape[0] != n or not np.all(np.isfinite(q)):
            raise InvalidArgumentError(
                f"quality must be {n} finite numbers, got shape {q.shape}", input="quality"
            )
        return q < self.min_quality

    def _finish(self, th: Thresholds, cons: Constraints) -> Clustering:
        raw = self._raw
        n = len(raw)
        counts = np.bincount(raw, minlength=n)
        grouped = (counts[raw] >= 2) & ~self._low
        ids, first, size = np.unique(raw[grouped], return_index=True, return_counts=True)
        rows = np.flatnonzero(grouped)
        order = np.lexsort((rows[first] if len(first) else first, -size))
        rank = np.empty(len(ids), np.int64)
        rank[order] = np.arange(len(ids))
        labels = np.full(n, NOISE, np.int64)
        slot = np.searchsorted(ids, raw[rows])
        labels[rows] = rank[slot]
        g = len(ids)
        sizes = size[order].astype(np.int64)
        x = self._x[rows].astype(np.float64)
        sums = np.zeros((g, x.shape[1]), np.float64)
        np.add.at(sums, labels[rows], x)
        dots = np.einsum("ij,ij->i", x, sums[labels[rows]])
        selfdot = np.einsum("ij,ij->i", x, x)
        confidence = np.full(n, np.nan, np.float32)
        confidence[rows] = (dots - selfdot) / (sizes[labels[rows]] - 1)
        reps = np.zeros(g, np.int64)
        if g:
            best = np.full(g, -np.inf)
            np.maximum.at(best, labels[rows], dots)
            is_best = dots >= best[labels[rows]]
            reps[:] = n
            np.minimum.at(reps, labels[rows][is_best], rows[is_best])
        tags = np.full(g, -1, np.int64)
        if g and (cons.tags >= 0).any():
            np.maximum.at(tags, labels[rows], cons.tags[rows])
        return Clustering(
            labels=labels,
            sizes=sizes,
            representatives=reps,
            confidence=confidence,
            low_quality=self._low.copy(),
            thresholds=th,
            graph=self._index.factory if self._index is not None else "Flat",
            tags=tags,
            local_size=(10.0**self._applied).astype(np.float32),
        )


def _unit_rows(embeddings: Any) -> np.ndarray:
    x = check_embeddings(embeddings, what="embeddings")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_constraints(constraints: Constraints | None, n: int) -> Constraints:
    if constraints is None:
        return Constraints.none(n)
    tags = np.asarray(constraints.tags)
    if tags.shape != (n,) or not np.issubdtype(tags.dtype, np.integer):
        raise InvalidArgumentError(
            f"constraints.tags must be {n} ints (one per face), got {tags.dtype} {tags.shape}",
            input="constraints",
        )
    cannot = []
    for pair in constraints.cannot:
        row, tag = (int(v) for v in pair)
        if not 0 <= row < n or tag < 0:
            raise InvalidArgumentError(
                f"cannot-link ({row}, {tag}) names no face of {n} or a negative tag",
                input="constraints",
            )
        if tags[row] == tag:
            raise InvalidArgumentError(
                f"face {row} is tagged {tag} and marked as not {tag}", input="constraints"
            )
        cannot.append((row, tag))
    return Constraints(tags.astype(np.int64), tuple(cannot))


def _start(tags: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """A starting partition where the faces of one tag are one group (must-link): every
    group holding a tagged face joins that tag's group."""
    n = len(tags)
    labels = np.arange(n, dtype=np.int64) if start is None else np.asarray(start, np.int64).copy()
    tagged = np.flatnonzero(tags >= 0)
    if len(tagged) == 0:
        return labels
    # union of: rows sharing a starting label, rows sharing a tag
    parent = np.arange(n + int(tags.max()) + 1, dtype=np.int64)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for r in tagged.tolist():
        ra, rb = find(int(labels[r])), find(n + int(tags[r]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(int(v)) for v in labels], np.int64)


def _without(a: np.ndarray, b: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with neither end below the quality gate."""
    if not low.any():
        return a, b
    keep = ~low[a] & ~low[b]
    return a[keep], b[keep]


def _bridges(
    ids: np.ndarray, sims: np.ndarray, new_rows: np.ndarray, n_old: int, low: float
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate edges between the best old neighbour of each new face and its other old
    neighbours above ``low``: groups a new face may bring together."""
    old = (ids >= 0) & (ids < n_old) & (sims >= low)
    out_a, out_b = [], []
    for i in range(ids.shape[0]):
        nb = ids[i][old[i]]
        if len(nb) >= 2:
            out_a.append(np.full(len(nb) - 1, nb[0]))
            out_b.append(nb[1:])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


__all__ = ["NOISE", "Clusterer", "Clustering", "Constraints", "EXACT_MAX", "cluster_embeddings"]
