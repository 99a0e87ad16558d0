"""The k-nearest-neighbour graph clustering works on, built with FAISS.

Average linkage never merges two groups whose every cross pair is below the lowest merge
threshold, so only edges at or above it matter; each face keeps its ``k`` most similar others
above it. Up to :data:`EXACT_MAX` faces the graph is exact (``IndexFlatIP``, BLAS); above, an
inverted-file index with 4-bit fast-scan codes and exact re-ranking, the gallery's IVF tier
(:func:`npcface.gallery.index.ivf_factory`) with lists and probes sized for a batch over the
whole collection (:func:`graph_factory`). Similarities are inner products of unit vectors
(cosines).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from ..gallery import index as ix

log = logging.getLogger(__name__)

EXACT_MAX = ix.FLAT_MAX_TEMPLATES
"""Up to this many faces the graph is exact (the gallery's exact tier: 50k)."""

DEFAULT_K = 32
"""Neighbours kept per face. Average linkage needs candidates, not every pair: the exact
group means come from sum vectors. On LFW k = 32 gives the same groups as all pairs."""

PROBE_SHARE = 16
"""Lists probed by the approximate graph: nlist / this (neighbours above clustering
thresholds sit close to each other, closer than the gallery's search needs)."""

BLOCK = 8192
"""Queries per FAISS call (bounds the (block, k) result arrays and shows progress)."""


@dataclass(frozen=True)
class Graph:
    """Undirected edges between faces, each once (a < b).

    Attributes:
        a, b: (E,) int64 face rows, a < b.
        sim: (E,) float32 cosine similarity of each edge.
        factory: the FAISS index that found them (``"Flat"``: exact).
    """

    a: np.ndarray
    b: np.ndarray
    sim: np.ndarray
    factory: str

    def __len__(self) -> int:
        return int(self.a.shape[0])


def graph_factory(n: int, dim: int) -> str:
    """The FAISS index the graph of ``n`` faces uses: exact up to :data:`EXACT_MAX`, else
    ``IVF{nlist},PQ{d/4}x4fs,RFlat`` with nlist ~ 4 sqrt(n) (a power of two, at most 16384)."""
    if n <= EXACT_MAX:
        return "Flat"
    nlist = 1 << int(round(math.log2(max(256.0, min(16384.0, 4.0 * math.sqrt(n))))))
    return f"IVF{nlist},PQ{ix.fastscan_m(dim)}x4fs,RFlat"


class NeighbourIndex:
    """The FAISS index of a collection's faces, kept between updates (faces are only
    added). Row numbers are the ids.

    Args:
        dim: embedding dimension.
        factory: ``"Flat"`` (exact) or a FAISS factory string (trained on the first
            :meth:`add`).
        seed: seed of the training sample.
    """

    def __init__(self, dim: int, factory: str = "Flat", seed: int = 0) -> None:
        self.dim = int(dim)
        self.factory = factory
        self.seed = seed
        self._index: faiss.Index | None = None
        self.ntotal = 0

    def add(self, x: np.ndarray) -> None:
        """Add (n, d) float32 unit rows, numbered after the rows already held."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._index is None:
            self._index = _build(x, self.factory, self.seed)
        else:
            self._index.add(x)
        self.ntotal += len(x)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of the ``k`` most similar held rows of each query, best
        first; rows -1 where fewer exist."""
        if self._index is None:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self._index.search(np.ascontiguousarray(q, dtype=np.float32), k)


def knn_table(
    x: np.ndarray,
    k: int = DEFAULT_K,
    queries: np.ndarray | None = None,
    index: NeighbourIndex | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each face's (or each of ``queries``') ``k`` most similar other faces.

    Args:
        x: (N, d) float32 unit rows: the faces.
        k: neighbours per face (itself excluded).
        queries: rows of ``x`` to search from (default: all).
        index: an index holding the rows of ``x`` (default: one built here with
            :func:`graph_factory`).
        progress: called with (queries done, queries) after each block.

    Returns:
        (sims, ids): (M, k) float32 cosines, best first, and (M, k) int64 rows; -1 (and
        -inf) where fewer than k others exist.
    """
    rows, index = _queries_and_index(x, queries, index)
    kk = min(k + 1, len(x))
    out_s = np.full((len(rows), k), -np.inf, np.float32)
    out_i = np.full((len(rows), k), -1, np.int64)
    for start in range(0, len(rows), BLOCK):
        q = rows[start : start + BLOCK]
        sims, ids = index.search(x[q], kk)
        ids = ids.astype(np.int64)
        drop = (ids == q[:, None]) | (ids < 0)
        # a query not found among its own results (ties, approximate search): drop the last
        missing = ~(ids == q[:, None]).any(1)
        drop[missing, -1] = True
        order = np.argsort(drop, axis=1, kind="stable")  # kept entries first, in order
        s2 = np.take_along_axis(np.where(drop, -np.inf, sims), order, 1)[:, :k]
        i2 = np.take_along_axis(np.where(drop, -1, ids), order, 1)[:, :k]
        out_s[start : start + len(q), : s2.shape[1]] = s2
        out_i[start : start + len(q), : i2.shape[1]] = i2
        if progress is not None:
            progress(min(start + BLOCK, len(rows)), len(rows))
    return out_s, out_i


def table_edges(
    sims: np.ndarray, ids: np.ndarray, rows: np.ndarray, min_sim: np.ndarray | float
) -> Graph:
    """The undirected graph of a neighbour table (:func:`knn_table`): an edge from each
    ``rows[i]`` to each neighbour whose similarity reaches ``min_sim`` (a float, or (M, k)
    per entry)."""
    keep = (ids >= 0) & (sims >= min_sim)
    src = np.broadcast_to(np.asarray(rows, np.int64)[:, None], ids.shape)[keep]
    dst = ids[keep]
    s = sims[keep].astype(np.float32)
    n = int(max(src.max(initial=-1), dst.max(initial=-1))) + 1
    return _undirected(src, dst, s, n, "")


def knn_graph(
    x: np.ndarray,
    k: int = DEFAULT_K,
    min_sim: float = -1.0,
    queries: np.ndarray | None = None,
    index: NeighbourIndex | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Graph:
    """Edges from each face (or each of ``queries``) to its ``k`` most similar faces.

    Args:
        x: (N, d) float32 unit rows: the faces.
        k: neighbours per face (itself excluded).
        min_sim: edges below this similarity are dropped.
        queries: rows of ``x`` to search from (default: all); the graph then holds the edges
            of these rows only (what an incremental update needs).
        index: an index holding the rows of ``x`` (default: one built here with
            :func:`graph_factory`).
        progress: called with (queries done, queries) after each block.

    Returns:
        The :class:`Graph`.
    """
    rows, index = _queries_and_index(x, queries, index)
    kk = min(k + 1, len(x))
    out_a, out_b, out_s = [], [], []
    for start in range(0, len(rows), BLOCK):
        q = rows[start : start + BLOCK]
        sims, ids = index.search(x[q], kk)
        src = np.repeat(q, ids.shape[1])
        dst = ids.reshape(-1).astype(np.int64)
        s = sims.reshape(-1)
        keep = (dst >= 0) & (dst != src) & (s >= min_sim)
        out_a.append(src[keep])
        out_b.append(dst[keep])
        out_s.append(s[keep].astype(np.float32))
        if progress is not None:
            progress(min(start + BLOCK, len(rows)), len(rows))
    a = np.concatenate(out_a) if out_a else np.zeros(0, np.int64)
    b = np.concatenate(out_b) if out_b else np.zeros(0, np.int64)
    s = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
    return _undirected(a, b, s, len(x), index.factory)


def _queries_and_index(
    x: np.ndarray, queries: np.ndarray | None, index: NeighbourIndex | None
) -> tuple[np.ndarray, NeighbourIndex]:
    """The rows to search from (default: all of ``x``) and an index over ``x`` (default: one
    built here with :func:`graph_factory`)."""
    n, dim = x.shape
    rows = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, np.int64)
    if index is None:
        index = NeighbourIndex(dim, graph_factory(n, dim))
        index.add(x)
    return rows, index


def _undirected(a: np.ndarray, b: np.ndarray, s: np.ndarray, n: int, factory: str) -> Graph:
    """One edge per unordered pair of the directed edges ``a -> b`` (similarity ``s``), the
    first listed kept; ``n`` bounds the row numbers."""
    n = max(n, 1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key, first = np.unique(lo * n + hi, return_index=True)
    return Graph(key // n, key % n, s[first], factory)


def _build(x: np.ndarray, factory: str, seed: int) -> faiss.Index:
    n, dim = x.shape
    if factory == "Flat":
        index = faiss.IndexFlatIP(dim)
        index.add(x)
        return index
    index = ix.create_index(factory, dim)
    t = ix.traits(factory, dim)
    if not index.is_trained:
        size = ix.training_sample_size(factory, dim, n)
        pick = np.random.default_rng(seed).choice(n, size=size, replace=False)
        ix.train_index(index, np.ascontiguousarray(x[np.sort(pick)]))
    index.add(x)
    params: dict[str, float] = {}
    if t.ivf:
        params["nprobe"] = max(8, t.nlist // PROBE_SHARE)
    if "k_factor" in t.params:
        params["k_factor"] = 8
    ix.apply_search_params(index, params)
    log.info("kNN graph index %s over %d faces (%s)", factory, n, params)
    return index
