"""The density-aware merge rule: each face's own neighbourhood sets its bar.

The size-scaled rule (:mod:`.thresholds`) gives every face of a collection of N faces the
same bars: the similarity at which a face *of the calibration data* meets ``eps`` strangers
among N. Real collections are not uniform: some faces live among look-alikes (low-quality
crops, children, one family), others far from anyone; and a collection padded with faces
unlike the calibration data (a million near strangers) pushes every bar up for everyone.
This rule measures each face's own stranger density instead and reuses the calibrated
thresholds at that density:

* **Local size.** A face whose ``r``-th nearest stranger sits at cosine ``s`` sees strangers
  as densely as a face of the calibration data does in a collection of
  ``n_i = r / FAR(s)`` faces (FAR from the calibration's pair tail:
  :meth:`~.thresholds.ClusterCalibration.size_at`). ``r`` = :data:`BACKGROUND_RANK`, taken
  among the face's graph neighbours outside its own group (``r`` = fewer if fewer strangers
  are among them, at least :data:`MIN_STRANGERS`; else ``n_i`` = N); clamped to
  [:data:`~.thresholds.MIN_COLLECTION`, ...]. A group's local size is the geometric mean of
  its faces'.
* **Bars.** Groups A and B merge when their mean similarity reaches the size-scaled rule's
  threshold for sizes (a, b) at collection size ``max(n_A, n_B)`` (both sides must accept)
  with ``eps`` = :data:`STRANGERS_PER_FACE` strangers per face: a face in a crowd of
  look-alikes needs more, a face far from everyone less; distractors far from a person's
  photos no longer raise that person's bars.
* **Own group excluded.** A face's nearest neighbours are often its own person's photos;
  counting them as strangers would make a person with many photos look dense and split
  them. So clustering runs in passes. The first counts every neighbour but caps local sizes
  at the smaller of N and :data:`TYPICAL_SPREAD` times the collection's median local size
  (a person with many photos is asked at most a little more than the typical face). Each
  further pass (:data:`REFINE_PASSES`) counts only neighbours outside the face's group of
  the pass before, without that cap (a face that sees fewer than :data:`MIN_STRANGERS`
  strangers keeps its first-pass size), and clusters again from the start.

Tuned only on celeba-subset + lag (``python bench/cluster.py --tune``): eps in {0.03, 0.1,
0.3, 1, 3, 10}, ranks {10, 20, 30} and 0 to 3 refining passes; eps 0.3, rank 10 and two
refining passes gave a mean BCubed F of 86.02 over the full set and three long-tailed
samples, against 83.31 for the size-scaled rule at its own best eps (0.1); a third pass adds
0.03. The cap's factor does not move the tuning figure (N binds there); it is the measured
spread of local sizes among true strangers (90th percentile / median: 4.3x to 11x on the
tuning sets). Figures in ``docs/clustering.md``. Related rules estimate density from the
k-th neighbour as well (e.g. the density step of "Learning to Cluster Faces via Confidence
and Connectivity Estimation", Yang et al. 2020); this one needs no training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .thresholds import MIN_COLLECTION, ClusterCalibration, group_floors, pair_thresholds

BACKGROUND_RANK = 10
"""r: a face's local size comes from its r-th nearest stranger. Tuned with eps (``--tune``):
ranks 10, 20 and 30 gave mean BCubed F 86.02, 85.98 and 85.96."""

MIN_STRANGERS = 3
"""With fewer strangers than this among a face's graph neighbours (all of them in its own
group), its local size is the collection's size N."""

STRANGERS_PER_FACE = 0.3
"""eps of the density rule: strangers a face may expect above its pair bar at its local
size. Tuned on celeba-subset + lag (``--tune``): 0.03 84.63, 0.1 85.60, 0.3 86.02, 1 85.72,
3 84.30, 10 79.50 (the size-scaled rule keeps its own eps,
:data:`npcface.cluster.thresholds.STRANGERS_PER_FACE`)."""

TYPICAL_SPREAD = 10.0
"""The first pass never asks a face more than the bar at this many times the collection's
median local size (nor more than at the collection's size): about the spread of local sizes
counted among true strangers on the tuning sets (90th percentile / median 4.3x to 11x,
``--tune`` prints it). Without it a collection padded with far faces (the million
distractors) sets N, and a person with more than r photos, who looks as dense as their own
photos, meets that bar and splits."""

REFINE_PASSES = 2
"""Passes after the first, each with local sizes counted outside the groups of the pass
before (``--tune``: 0 83.37, 1 85.79, 2 86.02, 3 86.05)."""


@dataclass(frozen=True)
class LocalRule:
    """The density-aware merge rule of one collection.

    Attributes:
        calibration: the model's impostor statistics.
        n: faces in the collection (the cap of the first pass and the fallback local size).
        eps: strangers per face at the face's local size.
    """

    calibration: ClusterCalibration
    n: int
    eps: float = STRANGERS_PER_FACE

    def pair(self, log_size: np.ndarray) -> np.ndarray:
        """Bar of two single faces at local sizes ``10 ** log_size`` (element-wise)."""
        return pair_thresholds(self.calibration, 10.0 ** np.asarray(log_size), self.eps)

    def merge(
        self,
        size_a: np.ndarray,
        size_b: np.ndarray,
        log_a: np.ndarray,
        log_b: np.ndarray,
    ) -> np.ndarray:
        """Mean similarity groups of ``size_a`` and ``size_b`` faces with mean log10 local
        sizes ``log_a`` and ``log_b`` need to merge (element-wise): the size-scaled rule
        (:meth:`~.thresholds.Thresholds.merge`) at collection size ``10 ** max(log_a,
        log_b)``."""
        n = 10.0 ** np.maximum(log_a, log_b)
        cal = self.calibration
        ab = np.asarray(size_a, np.float64) * np.asarray(size_b, np.float64)
        scaled = cal.mean + (pair_thresholds(cal, n, self.eps) - cal.mean) * np.sqrt(
            cal.rho + (1 - cal.rho) / ab
        )
        return np.maximum(group_floors(cal, n, self.eps), scaled)

    def lowest(self, log_size: np.ndarray) -> np.ndarray:
        """The lowest bar of any merge of a face at local size ``10 ** log_size`` (groups of
        any size): candidate edges below it are dropped."""
        n = 10.0 ** np.asarray(log_size, np.float64)
        cal = self.calibration
        scaled = cal.mean + (pair_thresholds(cal, n, self.eps) - cal.mean) * math.sqrt(cal.rho)
        return np.maximum(group_floors(cal, n, self.eps), scaled)


def first_log_sizes(
    sims: np.ndarray,
    ids: np.ndarray,
    calibration: ClusterCalibration,
    n: int,
    rank: int = BACKGROUND_RANK,
    cap: float | None = None,
    also: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """First-pass log10 local sizes: every neighbour counts as a stranger, so a face among
    many photos of its own person looks dense; no size goes above a cap.

    Args:
        sims, ids, calibration, n, rank: as :func:`local_log_sizes`.
        cap: largest local size; default the smaller of ``n`` and :data:`TYPICAL_SPREAD`
            times the median uncapped size of these faces and ``also`` (the collection's
            typical face: a person with many photos is never asked much more than that in
            the first pass).
        also: (K,) uncapped log10 sizes of the collection's other faces (an update).

    Returns:
        ((M,) float64 capped log10 sizes, (M,) the uncapped ones, the cap used).
    """
    raw = local_log_sizes(sims, ids, calibration, n, rank=rank, cap=math.inf)
    if cap is None:
        every = raw if also is None else np.concatenate([also, raw])
        typical = TYPICAL_SPREAD * 10.0 ** float(np.median(every)) if len(every) else math.inf
        cap = max(min(float(max(n, MIN_COLLECTION)), typical), MIN_COLLECTION)
    return np.minimum(raw, math.log10(cap)), raw, float(cap)


def local_log_sizes(
    sims: np.ndarray,
    ids: np.ndarray,
    calibration: ClusterCalibration,
    n: int,
    rows: np.ndarray | None = None,
    group: np.ndarray | None = None,
    rank: int = BACKGROUND_RANK,
    cap: float | None = None,
    fallback: np.ndarray | None = None,
) -> np.ndarray:
    """log10 of each face's local size, from its neighbour list.

    Args:
        sims: (M, k) cosine of each face's k nearest other faces, best first (padding:
            ``ids`` -1).
        ids: (M, k) their rows (-1: none).
        calibration: the model's impostor statistics.
        n: faces in the collection (the fallback size; with ``cap`` None, also the cap).
        rows: (M,) the faces' own rows (needed with ``group``).
        group: (N,) group of every row: neighbours in the face's own group are not
            strangers (None: every neighbour counts).
        rank: the r-th nearest stranger sets the size.
        cap: largest local size (default ``n``); ``math.inf`` for none.
        fallback: (M,) log10 sizes of faces with fewer than :data:`MIN_STRANGERS`
            strangers among their neighbours (default: log10 ``n``).

    Returns:
        (M,) float64 log10 local sizes, at least log10(:data:`~.thresholds.MIN_COLLECTION`).
    """
    n_eff = float(max(n, MIN_COLLECTION))
    hi = n_eff if cap is None else max(float(cap), n_eff)
    m = len(sims)
    valid = ids >= 0
    if group is not None:
        own = group[np.asarray(rows, np.int64)]
        valid &= group[np.where(valid, ids, 0)] != own[:, None]
    count = valid.sum(1)
    j = np.minimum(count, rank)
    # the j-th valid neighbour's similarity: rows are sorted best first
    masked = np.where(valid, sims, -np.inf)
    if group is not None:
        masked = -np.sort(-masked, axis=1)
    pick = masked[np.arange(m), np.maximum(j, 1) - 1].astype(np.float64)
    ok = j >= MIN_STRANGERS
    size = np.full(m, n_eff) if fallback is None else 10.0 ** np.asarray(fallback, np.float64)
    if ok.any():
        size[ok] = calibration.size_at(pick[ok], j[ok])
    return np.log10(np.clip(size, MIN_COLLECTION, hi))


__all__ = [
    "BACKGROUND_RANK",
    "MIN_STRANGERS",
    "REFINE_PASSES",
    "STRANGERS_PER_FACE",
    "LocalRule",
    "local_log_sizes",
]
