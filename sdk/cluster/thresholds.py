"""Merge thresholds for clustering, calibrated from impostor statistics and scaled with the
collection's size.

A verification threshold answers "are these two photos one person?" at a false-accept rate
per *pair*. Clustering asks it of every pair of a collection at once: a collection of N faces
offers each face N - 1 strangers, so a threshold at FAR 1e-3 links every face to about N/1000
strangers, and single or average linkage chains them into one group (at the verify threshold
0.37 all 13,233 LFW photos end in one cluster). Clustering thresholds therefore come from the
far tail of the impostor distribution and rise with N. Three rules, all from one
:class:`ClusterCalibration` (impostor statistics of labelled photos):

* **Two single faces** merge at ``pair_threshold(N)``: the similarity that eps impostor
  pairs in N pass (pair FAR = eps/N), so a face expects to meet eps strangers above it in
  the whole collection. eps = 0.1 is the one choice made by measurement: on the tuning
  collections (celeba-subset + lag, and samples of them with a long-tailed number of photos
  per person) it gave the best mean BCubed F of eps in {0.03, 0.1, 0.3, 1, 3, 10}
  (:data:`STRANGERS_PER_FACE`).
* **Groups** merge by average linkage (the mean similarity over all a x b cross pairs). The
  mean of a x b impostor scores spreads less than one score, but not by sqrt(ab): scores of
  two people share a person-pair part (look-alikes). With ``rho`` the share of impostor
  score variance that belongs to the pair of people, the mean's spread is
  ``sd * sqrt(rho + (1 - rho) / (a b))``, so the threshold for sizes (a, b) is
  ``mean + (pair_threshold - mean) * sqrt(rho + (1 - rho) / (a b))``: a face joins a large
  group at a lower mean similarity than it needs to pair with another single face.
* **Never below the people floor** ``group_floor(N)``: the mean similarity that one pair of
  *different people* in N^2/8 passes (the identity-level impostor tail: two people's
  photos averaged, measured on people with 4+ photos). N^2/8 bounds the pairs of groups a
  collection of N faces can hold (at most N/2 groups of two or more). Look-alike siblings
  sit in this tail: on LFW George W. and Jeb Bush average 0.445 over 530 x 12 photos (old
  INT8 graph); the floor at N = 13,233 is 0.456 for sface.

These are the bars of the size-scaled rule (``density=False``). The default rule
(:mod:`.density`) uses the same three formulas at each face's own *local* size instead of
N, with its own eps.

Sources: average-linkage clustering of face embeddings (e.g. Shi et al. 2018, "Face
Clustering: Representation and Pairwise Constraints"); the variance split is the usual
random-effects decomposition of impostor scores by pair of identities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgumentError

DUPLICATE_LINK = 0.45
"""Two labelled identities whose photos average this similarity or more are taken for one
person under two labels and left out of the impostor statistics. In celeba-subset + lag all
such pairs are the same person (celeba 7392/7393; celebrities present in both sets under an
id and a name; 'kathleen_turne'/'kathleen_turner', 'rick_schroder'/'ricky_schroder')."""

MIN_PAIRS_PER_FAR = 100
"""A FAR of the pair tail is measured only with at least this many impostor pairs per
expected false accept (1e-5 needs 10M pairs)."""

MIN_IDENTITY_PAIRS_PER_FAR = 10
"""The same for the identity-level tail (pairs of people)."""

IDENTITY_MIN_PHOTOS = 4
"""People with at least this many photos make the identity-level tail."""

STRANGERS_PER_FACE = 0.1
"""eps: how many strangers a face may expect above the pair threshold in the whole
collection (pair FAR = eps / N). Chosen on the tuning collections (``python bench/cluster.py
--tune``, never LFW): of 0.03, 0.1, 0.3, 1, 3 and 10, 0.1 gave the best mean BCubed F, for
sface (83.31; 1: 82.83) and for the INT8 graph before issue 24 (83.34; 1: 82.82). The
full 10,055-photo set alone prefers looser thresholds (eps 10: 82.62, 0.1: 79.97), the
long-tailed samples (most people with one photo) stricter ones."""

MIN_COLLECTION = 1000
"""Smaller collections use the thresholds of this many faces: clustering is never looser
than verification at FAR 1e-3."""


@dataclass(frozen=True)
class ClusterCalibration:
    """Impostor statistics of one embedding model, for clustering thresholds.

    Attributes:
        model: the embedding model they belong to.
        mean: mean cosine similarity of impostor pairs (two photos of different people).
        rho: share of the impostor score variance that belongs to the pair of people
            (random-effects split), in [0, 1].
        pair_tail: ((FAR, threshold), ...) of single impostor pairs, FAR decreasing.
        identity_tail: ((FAR, threshold), ...) of the mean similarity between two different
            people (all their photos), FAR decreasing.
        source: how they were measured.
    """

    model: str
    mean: float
    rho: float
    pair_tail: tuple[tuple[float, float], ...]
    identity_tail: tuple[tuple[float, float], ...]
    source: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def pair_threshold(self, n: int, eps: float | None = None) -> float:
        """Two single faces merge at or above this in a collection of ``n`` faces: the
        similarity at pair FAR ``eps / n`` (``eps`` default :data:`STRANGERS_PER_FACE`; the
        tail's log-linear interpolation, extrapolated with its slope beyond the measured
        FARs)."""
        n = max(_check_n(n), MIN_COLLECTION)
        return float(pair_thresholds(self, np.float64(n), eps))

    def group_floor(self, n: int, eps: float | None = None) -> float:
        """No two groups merge below this in a collection of ``n`` faces: the identity-level
        tail at FAR 8/n^2 (n^2/8 bounds the pairs of groups of 2+ faces), never above
        :meth:`pair_threshold`."""
        n = max(_check_n(n), MIN_COLLECTION)
        return float(group_floors(self, np.float64(n), eps))

    def thresholds(self, n: int, eps: float | None = None) -> Thresholds:
        """The merge rule for a collection of ``n`` faces (``eps``: strangers per face, default
        :data:`STRANGERS_PER_FACE`)."""
        n = _check_n(n)
        return Thresholds(
            n=n,
            pair=self.pair_threshold(n, eps),
            floor=self.group_floor(n, eps),
            mean=self.mean,
            rho=self.rho,
        )

    def size_at(self, sim: np.ndarray, rank: np.ndarray | int) -> np.ndarray:
        """The collection size at which a face with ``rank`` strangers at or above cosine
        ``sim`` is typical: ``rank / FAR(sim)``, FAR from the pair tail (element-wise; the
        inverse of :meth:`pair_threshold` at ``eps = rank``). Not clamped."""
        return np.asarray(rank, np.float64) / far_at(self.pair_tail, sim)


@dataclass(frozen=True)
class Thresholds:
    """The merge rule for one collection size.

    Attributes:
        n: faces in the collection.
        pair: two single faces merge at or above this cosine similarity.
        floor: no two groups merge below this mean similarity.
        mean, rho: the impostor statistics the sizes' rule uses (see :meth:`merge`).
    """

    n: int
    pair: float
    floor: float
    mean: float
    rho: float

    def merge(self, size_a: np.ndarray | float, size_b: np.ndarray | float) -> np.ndarray:
        """Mean similarity two groups of ``size_a`` and ``size_b`` faces need to merge
        (element-wise): ``max(floor, mean + (pair - mean) * sqrt(rho + (1 - rho) / (a b)))``."""
        ab = np.asarray(size_a, np.float64) * np.asarray(size_b, np.float64)
        scaled = self.mean + (self.pair - self.mean) * np.sqrt(self.rho + (1 - self.rho) / ab)
        return np.maximum(self.floor, scaled)

    @property
    def lowest(self) -> float:
        """The lowest threshold of any merge (groups of any size): edges below it never
        matter."""
        scaled = self.mean + (self.pair - self.mean) * math.sqrt(self.rho)
        return max(self.floor, scaled)

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "pair": self.pair, "floor": self.floor, "lowest": self.lowest}


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgumentError(f"collection size must be a positive int, got {n!r}")
    return int(n)


def _tail_at(tail: Sequence[tuple[float, float]], far: float) -> float:
    return float(tail_at(tail, np.float64(far)))


def _tail_line(tail: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, float]:
    fars = np.log10([p[0] for p in tail])
    thr = np.array([p[1] for p in tail], np.float64)
    slope = float(np.polyfit(fars, thr, 1)[0])  # threshold per decade of FAR (negative)
    return fars, thr, slope


def tail_at(tail: Sequence[tuple[float, float]], far: np.ndarray) -> np.ndarray:
    """Threshold at ``far`` (element-wise) on a tail given as (FAR, threshold) points, FAR
    decreasing: linear in log10(FAR) between points; beyond them, the least-squares slope of
    all points (the last point alone rests on the fewest pairs: 27 pairs of people at 1e-4
    in the shipped calibration)."""
    fars, thr, slope = _tail_line(tail)
    x = np.log10(np.asarray(far, np.float64))
    inside = np.interp(-x, -fars, thr)
    below = thr[-1] + slope * (x - fars[-1])  # rarer than the last measured FAR
    above = thr[0] + slope * (x - fars[0])
    return np.where(x < fars[-1], below, np.where(x > fars[0], above, inside))


def far_at(tail: Sequence[tuple[float, float]], sim: np.ndarray) -> np.ndarray:
    """The inverse of :func:`tail_at`: the FAR at which the tail's threshold is ``sim``
    (element-wise; beyond the measured points the same slope, so it may exceed 1 for low
    similarities)."""
    fars, thr, slope = _tail_line(tail)
    s = np.asarray(sim, np.float64)
    inside = np.interp(s, thr, fars)
    beyond = fars[-1] + (s - thr[-1]) / slope
    before = fars[0] + (s - thr[0]) / slope
    return 10.0 ** np.where(s > thr[-1], beyond, np.where(s < thr[0], before, inside))


def pair_thresholds(cal: ClusterCalibration, n: np.ndarray, eps: float | None = None) -> np.ndarray:
    """:meth:`ClusterCalibration.pair_threshold` element-wise over collection sizes ``n``
    (floats, taken as they are: no clamping)."""
    e = STRANGERS_PER_FACE if eps is None else float(eps)
    return tail_at(cal.pair_tail, e / np.asarray(n, np.float64))


def group_floors(cal: ClusterCalibration, n: np.ndarray, eps: float | None = None) -> np.ndarray:
    """:meth:`ClusterCalibration.group_floor` element-wise over collection sizes ``n``."""
    n = np.asarray(n, np.float64)
    return np.minimum(tail_at(cal.identity_tail, 8.0 / (n * n)), pair_thresholds(cal, n, eps))


# ----------------------------------------------------------------------- measuring them
def calibrate_clustering(
    embeddings: np.ndarray,
    identities: Sequence[str] | np.ndarray,
    model: str,
    source: str = "",
    fars: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    block: int = 2048,
) -> ClusterCalibration:
    """Impostor statistics for clustering from labelled embeddings (all pairs).

    Args:
        embeddings: (N, d) unit embeddings of labelled photos (not the collections to be
            clustered: photos of many people, several each).
        identities: (N,) person of each row.
        model: the embedding model's name.
        source: a line on what was measured (stored in the result).
        fars: FARs to measure; those the data cannot support (:data:`MIN_PAIRS_PER_FAR`)
            are left out.
        block: rows per matrix product.

    Returns:
        A :class:`ClusterCalibration`.

    Raises:
        InvalidArgumentError: fewer than 2 FARs of either tail can be measured.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    _, inv = np.unique(np.asarray(identities), return_inverse=True)
    inv = inv.reshape(-1)
    k = int(inv.max()) + 1
    counts = np.bincount(inv, minlength=k)
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, inv, x.astype(np.float64))
    link = (sums @ sums.T) / np.outer(counts, counts)
    np.fill_diagonal(link, -np.inf)
    same = link >= DUPLICATE_LINK  # one person under two labels
    # single impostor pairs, and the per-pair-of-people sums for the variance split
    scores = []
    n = len(x)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sims = x[rows] @ x.T
        keep = (np.arange(n)[None, :] > rows[:, None]) & (inv[rows][:, None] != inv[None, :])
        keep &= ~same[inv[rows]][:, inv]
        scores.append(sims[keep])
    imp = np.sort(np.concatenate(scores))
    mean = float(imp.mean())
    var_total = float(imp.var())
    iu = np.triu_indices(k, 1)
    people = ~same[iu]
    means = link[iu][people]
    pairs = np.outer(counts, counts)[iu][people]
    # variance of pair-of-people means = var_between + E[var_within / (a b)]; var_within is
    # var_total - var_between for independent parts: solve for var_between
    mean_inv = float(np.mean(1.0 / pairs))
    spread = float(np.mean((means - mean) ** 2))
    var_between = max(0.0, (spread - var_total * mean_inv) / (1.0 - mean_inv))
    rho = min(1.0, var_between / var_total)
    pair_tail = _quantiles(imp, fars, MIN_PAIRS_PER_FAR)
    big = (counts[iu[0]] >= IDENTITY_MIN_PHOTOS) & (counts[iu[1]] >= IDENTITY_MIN_PHOTOS)
    ident = np.sort(link[iu][people & big])
    identity_tail = _quantiles(ident, fars, MIN_IDENTITY_PAIRS_PER_FAR)
    if len(pair_tail) < 2 or len(identity_tail) < 2:
        raise InvalidArgumentError(
            f"too few impostor pairs to calibrate ({len(imp):,} pairs, {len(ident):,} pairs "
            f"of people with {IDENTITY_MIN_PHOTOS}+ photos): use more people"
        )
    return ClusterCalibration(
        model=model,
        mean=round(mean, 4),
        rho=round(rho, 3),
        pair_tail=pair_tail,
        identity_tail=identity_tail,
        source=source,
        extra={
            "impostor_pairs": float(len(imp)),
            "identity_pairs": float(len(ident)),
            "duplicate_identity_pairs": float(int(same[iu].sum())),
        },
    )


def _quantiles(
    sorted_scores: np.ndarray, fars: Sequence[float], per_far: int
) -> tuple[tuple[float, float], ...]:
    out = []
    n = len(sorted_scores)
    for far in sorted(fars, reverse=True):
        if n * far < per_far:
            continue
        accepted = int(math.floor(far * n))
        out.append((float(far), round(float(sorted_scores[n - accepted - 1]), 4)))
    return tuple(out)
