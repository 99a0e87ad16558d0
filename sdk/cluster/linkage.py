"""Average-linkage agglomeration over a sparse candidate graph, with constraints.

The similarity of two groups is the mean cosine over all their cross pairs. For unit vectors
that mean is exact from two sum vectors: mean_{i in A, j in B} x_i . x_j = (S_A . S_B) / (|A|
|B|), so no pair matrix is stored; the graph only says which groups may be close.

Merging is reciprocal-nearest-neighbour agglomeration (RAC, Sumengen et al., "Scaling
Hierarchical Agglomerative Clustering to Trillion-Edge Graphs", 2021): in each round every
group finds its most similar neighbour among those it may merge with (mean similarity at or
above the threshold for the two sizes), and every pair of groups that chose each other
merges. Average linkage is reducible, so with one threshold this gives exactly the groups
of sequential hierarchical clustering (SciPy's ``linkage(method="average")`` cut at that
threshold), in a few dozen vectorised rounds instead of N sequential merges.

Constraints (the corrections people make):

* a **tag** per face: faces of one tag start as one group (must-link) and two groups of
  different tags never merge (cannot-link between people);
* **cannot** pairs (face, tag): the group holding that face never merges with the group of
  that tag ("not this person").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from .thresholds import Thresholds

log = logging.getLogger(__name__)


def average_linkage(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    thresholds: Thresholds | Callable[[np.ndarray, np.ndarray], np.ndarray],
    labels: np.ndarray | None = None,
    tags: np.ndarray | None = None,
    cannot: Sequence[tuple[int, int]] = (),
    density: np.ndarray | None = None,
) -> np.ndarray:
    """Merge faces into groups by average linkage.

    Args:
        x: (N, d) unit rows.
        a, b: (E,) candidate edges between rows (either order; duplicates are fine).
        thresholds: the merge rule: a :class:`~npcface.cluster.thresholds.Thresholds`, or a
            function of the two group sizes (arrays) giving the mean similarity they need.
        labels: (N,) a starting partition (rows with one label start as one group); default
            every row alone.
        tags: (N,) int person tag per row (-1: none); all rows of a starting group carry one
            tag.
        cannot: (row, tag) pairs: the row's group never merges with the group of the tag.
        density: (N,) a number per row (:mod:`npcface.cluster.density`: log10 of the face's
            local collection size); with it, ``thresholds`` is a function of the two group
            sizes and the two groups' means of it: ``f(size_a, size_b, mean_a, mean_b)``.

    Returns:
        (N,) int64 group id per row: the first (smallest) row of its group.
    """
    n = len(x)
    merge_at = thresholds.merge if isinstance(thresholds, Thresholds) else thresholds
    start = np.arange(n, dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    _, group = np.unique(start, return_inverse=True)
    group = group.reshape(-1).astype(np.int64)
    m = int(group.max()) + 1 if n else 0
    ga, gb = group[np.asarray(a, np.int64)], group[np.asarray(b, np.int64)]
    keep = ga != gb
    ga, gb = ga[keep], gb[keep]
    # only groups with an edge take part: the rest keep their starting group
    active = np.unique(np.concatenate([ga, gb]))
    if len(active) == 0:
        return _first_member(group)
    slot = np.full(m, -1, np.int64)
    slot[active] = np.arange(len(active))
    ca, cb = slot[ga], slot[gb]
    c = len(active)
    rows = np.flatnonzero(slot[group] >= 0)
    sums = _group_sums(x, rows, slot[group[rows]], c)
    size = np.bincount(slot[group[rows]], minlength=c).astype(np.float64)
    dsum = None
    if density is not None:
        dens = np.asarray(density, np.float64)
        dsum = np.bincount(slot[group[rows]], weights=dens[rows], minlength=c)
    tag = np.full(c, -1, np.int64)
    if tags is not None:
        t = np.asarray(tags, np.int64)
        np.maximum.at(tag, slot[group[rows]], t[rows])
    excluded: dict[int, set[int]] = {}
    for row, person in cannot:
        s = slot[group[int(row)]]
        if s >= 0:
            excluded.setdefault(int(s), set()).add(int(person))
    has_excl = np.zeros(c, bool)
    has_excl[list(excluded)] = True
    root = np.arange(c, dtype=np.int64)
    rounds = merges = 0

    def candidates(ea: np.ndarray, eb: np.ndarray) -> tuple[np.ndarray, ...]:
        """Distinct pairs (lo < hi) of different groups, their mean similarity and whether
        it reaches their bar."""
        lo, hi = np.minimum(ea, eb), np.maximum(ea, eb)
        key = np.unique(lo[lo != hi] * c + hi[lo != hi])
        ea, eb = key // c, key % c
        link = _mean_links(sums, size, ea, eb)
        if dsum is None:
            need = merge_at(size[ea], size[eb])
        else:
            need = merge_at(size[ea], size[eb], dsum[ea] / size[ea], dsum[eb] / size[eb])
        return ea, eb, link, link >= need

    # a pair's mean similarity and bar change only when one of its groups does: each round
    # re-evaluates the pairs that touch a group merged in the round before
    ca, cb, link, ok = candidates(ca, cb)
    while ok.any():
        rounds += 1
        u, v = _reciprocal_best(ca[ok], cb[ok], link[ok], c)
        if len(u) == 0:
            break
        allowed = _allowed(u, v, tag, excluded, has_excl)
        if not allowed.all():  # forbidden pairs stay forbidden: drop their edges for good
            bad = set((u[~allowed] * c + v[~allowed]).tolist())
            keep = ~np.isin(ca * c + cb, np.fromiter(bad, np.int64, len(bad)))
            ca, cb, link, ok = ca[keep], cb[keep], link[keep], ok[keep]
            u, v = u[allowed], v[allowed]
            if len(u) == 0:
                continue
        sums[u] += sums[v]
        size[u] += size[v]
        sums[v] = 0.0
        size[v] = 0.0
        if dsum is not None:
            dsum[u] += dsum[v]
            dsum[v] = 0.0
        tag[u] = np.maximum(tag[u], tag[v])
        for uu, vv in zip(u[has_excl[v]].tolist(), v[has_excl[v]].tolist(), strict=True):
            excluded.setdefault(uu, set()).update(excluded.pop(vv))
            has_excl[uu] = True
        step = np.arange(c, dtype=np.int64)
        step[v] = u
        root = step[root]
        changed = np.zeros(c, bool)
        changed[u] = True
        ca, cb = step[ca], step[cb]
        touched = changed[ca] | changed[cb]
        ta, tb, tl, tok = candidates(ca[touched], cb[touched])
        rest = ~touched
        ca = np.concatenate([ca[rest], ta])
        cb = np.concatenate([cb[rest], tb])
        link = np.concatenate([link[rest], tl])
        ok = np.concatenate([ok[rest], tok])
        merges += len(u)
    log.debug("average linkage: %d merges in %d rounds over %d groups", merges, rounds, c)
    final = np.arange(m, dtype=np.int64)
    final[active] = active[root]
    return _first_member(final[group])


def _group_sums(x: np.ndarray, rows: np.ndarray, of: np.ndarray, c: int) -> np.ndarray:
    """(c, d) float64 sums of the rows ``rows`` of ``x`` by group ``of`` (groups of one row
    copied, the others accumulated)."""
    sums = np.zeros((c, x.shape[1]), np.float64)
    alone = np.bincount(of, minlength=c)[of] == 1
    sums[of[alone]] = x[rows[alone]]
    np.add.at(sums, of[~alone], x[rows[~alone]].astype(np.float64))
    return sums


LINK_BLOCK = 1 << 18
"""Candidate pairs per block of the mean-similarity computation (bounds the gathered sum
vectors: 2 x 256k x d float64)."""


def _mean_links(sums: np.ndarray, size: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Mean cross-pair similarity of groups ``ca[i]`` and ``cb[i]`` from their sum vectors."""
    out = np.empty(len(ca), np.float64)
    for s0 in range(0, len(ca), LINK_BLOCK):
        u, v = ca[s0 : s0 + LINK_BLOCK], cb[s0 : s0 + LINK_BLOCK]
        out[s0 : s0 + len(u)] = np.einsum("ij,ij->i", sums[u], sums[v]) / (size[u] * size[v])
    return out


def _reciprocal_best(
    a: np.ndarray, b: np.ndarray, link: np.ndarray, c: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (u < v) of groups that are each other's most similar candidate (ties: the
    smaller id)."""
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    val = np.concatenate([link, link])
    order = np.lexsort((dst, -val, src))
    src, dst = src[order], dst[order]
    first = np.ones(len(src), bool)
    first[1:] = src[1:] != src[:-1]
    best = np.full(c, -1, np.int64)
    best[src[first]] = dst[first]
    u = src[first]
    v = best[u]
    mutual = (best[v] == u) & (u < v)
    return u[mutual], v[mutual]


def _allowed(
    u: np.ndarray,
    v: np.ndarray,
    tag: np.ndarray,
    excluded: dict[int, set[int]],
    has_excl: np.ndarray,
) -> np.ndarray:
    ok = ~((tag[u] >= 0) & (tag[v] >= 0) & (tag[u] != tag[v]))
    check = np.flatnonzero(ok & (has_excl[u] | has_excl[v]))
    for i in check.tolist():
        uu, vv = int(u[i]), int(v[i])
        if tag[vv] in excluded.get(uu, ()) or tag[uu] in excluded.get(vv, ()):
            ok[i] = False
    return ok


def _first_member(group: np.ndarray) -> np.ndarray:
    """Group ids renamed to the first row of each group (deterministic, order-free)."""
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)
