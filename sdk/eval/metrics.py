"""Verification and identification metrics in plain numpy.

Conventions used throughout:

* Scores are similarities: higher means more alike (e.g. cosine similarity of unit
  embeddings). A pair is accepted as "same" when ``score >= threshold``.
* Labels are booleans or 0/1: ``True``/1 for a genuine (same identity) pair.
* FAR (false accept rate) = accepted impostor pairs / impostor pairs;
  TAR (true accept rate) = accepted genuine pairs / genuine pairs.
* Thresholds are returned as Python floats (float64). When a threshold has to lie strictly
  above a score, it is the next representable number above that score *in the scores'
  own floating dtype*, so it stays strictly above even after a cast back to float32.

References: LFW 10-fold protocol (Huang et al. 2007); 1:N metrics follow NIST FRVT Part 2
(Grother et al., NISTIR 8271): CMC rank-k for closed-set, TPIR@FPIR for open-set search.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- validation
def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    array = np.asarray(scores)
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise InvalidArgumentError(f"{name} is empty")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidArgumentError(f"{name} must be numeric, got dtype {array.dtype}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    return array


def _as_labels(labels: Any, size: int, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != size:
        raise InvalidArgumentError(
            f"{name} must have shape ({size},) like the scores, got {array.shape}"
        )
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.number) or not np.all((array == 0) | (array == 1)):
        raise InvalidArgumentError(f"{name} must be booleans or 0/1")
    return array.astype(bool)


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    return s, _as_labels(labels, s.shape[0])


def _both_classes(labels: np.ndarray, what: str) -> None:
    if labels.all() or not labels.any():
        raise InvalidArgumentError(
            f"{what} needs both genuine (label 1) and impostor (label 0) pairs"
        )


def _check_rate(rate: float, name: str) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise InvalidArgumentError(f"{name} must be in [0, 1], got {rate}")
    return rate


def _float_dtype(array: np.ndarray) -> type[np.floating]:
    return array.dtype.type if np.issubdtype(array.dtype, np.floating) else np.float64


# ------------------------------------------------------------------------------- ROC
def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve: one point per distinct score.

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs. Both classes must occur.

    Returns:
        ``(far, tar, thresholds)``, each of shape (m + 1,) where m is the number of distinct
        scores. ``thresholds`` is decreasing: ``inf`` first (nothing accepted, the point
        (0, 0)), then every distinct score from the highest to the lowest (the last one
        accepts everything, the point (1, 1)). ``far[i]``/``tar[i]`` are the rates of the
        rule ``score >= thresholds[i]``, so both are non-decreasing. Tied scores share one
        point, so ties never create optimistic staircase steps.

    Raises:
        ValueError: shapes differ, inputs are empty/non-finite, or a class is missing.
    """
    s, y = _scores_labels(scores, labels)
    _both_classes(y, "roc_curve")
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    y_desc = y[order]
    # last index of each run of equal scores in descending order
    last = np.flatnonzero(np.r_[s_desc[1:] != s_desc[:-1], True])
    true_acc = np.cumsum(y_desc)[last]
    false_acc = (last + 1) - true_acc
    num_pos = int(y.sum())
    num_neg = y.size - num_pos
    far = np.r_[0.0, false_acc / num_neg]
    tar = np.r_[0.0, true_acc / num_pos]
    thresholds = np.r_[np.inf, s_desc[last].astype(np.float64)]
    return far, tar, thresholds


def auc(far: Any, tar: Any) -> float:
    """Area under a ROC curve by the trapezoid rule.

    Args:
        far: (m,) false accept rates, non-decreasing (as returned by :func:`roc_curve`).
        tar: (m,) true accept rates at the same points.

    Returns:
        The area; 1.0 for perfect separation, 0.5 for chance.

    Raises:
        ValueError: shapes differ, fewer than two points, or ``far`` is not non-decreasing.
    """
    x = np.asarray(far, dtype=np.float64)
    y = np.asarray(tar, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise InvalidArgumentError(
            f"far and tar must be 1-D of equal length, got {x.shape}, {y.shape}"
        )
    if x.size < 2:
        raise InvalidArgumentError("auc needs at least two ROC points")
    if np.any(np.diff(x) < 0):
        raise InvalidArgumentError("far must be non-decreasing (sort the curve by FAR first)")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


# ------------------------------------------------------------------ thresholds at a FAR
def _threshold_for_rate(negatives: np.ndarray, rate: float) -> float:
    """Smallest ``t`` with ``mean(negatives >= t) <= rate`` (see :func:`threshold_at_far`)."""
    n = negatives.size
    allowed = int(np.floor(rate * n))
    # make `allowed` the largest count k with k / n <= rate in floating point, so the check
    # `np.mean(neg >= t) <= rate` a caller would write agrees with ours
    while allowed + 1 <= n and (allowed + 1) / n <= rate:
        allowed += 1
    while allowed > 0 and allowed / n > rate:
        allowed -= 1
    if allowed >= n:
        # every impostor may be accepted: the lowest impostor score is the smallest useful t
        return float(negatives.min())
    # t must lie strictly above the (allowed+1)-th highest negative; the smallest such t
    kth = np.partition(negatives, n - 1 - allowed)[n - 1 - allowed]
    dtype = _float_dtype(negatives)
    return float(np.nextafter(dtype(kth), dtype(np.inf)))


def threshold_at_far(scores: Any, labels: Any, far: float) -> float:
    """Smallest threshold whose false accept rate is at most ``far``.

    The impostor (label 0) scores alone decide the threshold. With ``N`` impostors, at most
    ``k = floor(far * N)`` of them may score ``>= threshold``, so the result is the next
    representable number above the (k+1)-th highest impostor score: the lowest, i.e. most
    permissive, threshold that keeps the empirical FAR ``<= far``.

    When ``far < 1 / N`` (e.g. FAR=1e-4 on LFW's 3000 impostor pairs) the data cannot resolve
    the target; then ``k = 0`` and the threshold is ``np.nextafter(max_impostor, inf)``, just
    above the highest impostor score (empirical FAR 0). Such numbers are optimistic; report
    the number of impostors with them. When ``far >= 1`` the lowest impostor score is
    returned (everything accepted).

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs. At least one impostor needed.
        far: target false accept rate in [0, 1].

    Returns:
        The threshold (accept when ``score >= threshold``).

    Raises:
        ValueError: bad shapes/values, ``far`` outside [0, 1], or no impostor pairs.
    """
    s, y = _scores_labels(scores, labels)
    far = _check_rate(far, "far")
    negatives = s[~y]
    if negatives.size == 0:
        raise InvalidArgumentError("threshold_at_far needs impostor (label 0) pairs")
    if far * negatives.size < 1:
        logger.debug(
            "FAR %g is below the resolution 1/%d of the impostor set; threshold set just "
            "above the highest impostor score",
            far,
            negatives.size,
        )
    return _threshold_for_rate(negatives, far)


def tar_at_far(scores: Any, labels: Any, far: float) -> float:
    """True accept rate at the threshold from :func:`threshold_at_far`.

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs. Both classes must occur.
        far: target false accept rate in [0, 1].

    Returns:
        Fraction of genuine pairs with ``score >= threshold_at_far(scores, labels, far)``.

    Raises:
        ValueError: bad inputs, or a class is missing.
    """
    s, y = _scores_labels(scores, labels)
    _both_classes(y, "tar_at_far")
    threshold = threshold_at_far(s, y, far)
    return float(np.mean(s[y] >= threshold))


# ------------------------------------------------------------------- best accuracy
def best_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """Threshold maximising verification accuracy, found exactly.

    Every way of splitting the sorted distinct scores is tried: "accept everything" (the
    threshold is the lowest score), each midpoint between two neighbouring distinct scores,
    and "accept nothing" (just above the highest score). Among equally accurate thresholds
    the smallest is returned. Cost O(n log n).

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs.

    Returns:
        ``(threshold, accuracy)`` where accuracy is the fraction of pairs classified
        correctly by ``score >= threshold``.

    Raises:
        ValueError: bad shapes or values.
    """
    s, y = _scores_labels(scores, labels)
    order = np.argsort(s, kind="stable")
    s_asc = s[order]
    y_asc = y[order]
    distinct = np.unique(s_asc)
    # index of the first score >= each candidate cut, plus n for "accept nothing"
    first = np.r_[np.searchsorted(s_asc, distinct, side="left"), s_asc.size]
    neg_below = np.r_[0, np.cumsum(~y_asc)][first]
    pos_below = first - neg_below
    num_pos = int(y.sum())
    correct = neg_below + (num_pos - pos_below)
    best = int(np.argmax(correct))
    accuracy = float(correct[best] / s.size)
    if best == 0:
        threshold = float(distinct[0])
    elif best == distinct.size:
        threshold = float(np.nextafter(distinct[-1], distinct.dtype.type(np.inf)))
    else:
        # midpoint in the scores' own dtype, so it still separates them after a cast
        lo, hi = distinct[best - 1], distinct[best]
        mid = lo + (hi - lo) / 2
        threshold = float(mid if lo < mid <= hi else hi)
    return threshold, accuracy


@dataclass(frozen=True)
class KFoldResult:
    """K-fold verification accuracy (LFW protocol).

    Attributes:
        accuracies: accuracy on each held-out fold, in ascending fold-id order.
        mean: mean of ``accuracies``.
        std: population standard deviation (``np.std``, ddof=0) of ``accuracies``, as
            conventionally reported on LFW.
        thresholds: threshold chosen on the other folds for each held-out fold.
        fold_ids: the fold ids, in the same order.
    """

    accuracies: tuple[float, ...]
    mean: float
    std: float
    thresholds: tuple[float, ...]
    fold_ids: tuple[int, ...] = field(default=())


def _fold_ids(folds: int | Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        k = int(folds)
        if not 2 <= k <= n:
            raise InvalidArgumentError(f"number of folds must be in [2, {n}], got {k}")
        ids = np.empty(n, dtype=np.int64)
        for fold, chunk in enumerate(np.array_split(np.arange(n), k)):
            ids[chunk] = fold
        return ids
    ids = np.asarray(folds)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise InvalidArgumentError(
            f"folds must be an int or have shape ({n},), got shape {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidArgumentError(f"fold ids must be integers, got dtype {ids.dtype}")
    return ids


def kfold_accuracy(
    scores: Any, labels: Any, folds: int | Sequence[int] | np.ndarray = 10
) -> KFoldResult:
    """Cross-validated verification accuracy.

    For each fold, the threshold is chosen by :func:`best_threshold` on all other folds and
    the accuracy is measured on the held-out fold.

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs.
        folds: (n,) integer fold id per pair (LFW: ``Pair.fold``), or an int ``k`` to split
            the pairs in file order into ``k`` contiguous, (nearly) equal parts.

    Returns:
        The per-fold accuracies and thresholds with their mean and std.

    Raises:
        ValueError: bad inputs or fewer than two folds.
    """
    s, y = _scores_labels(scores, labels)
    ids = _fold_ids(folds, s.size)
    unique = np.unique(ids)
    if unique.size < 2:
        raise InvalidArgumentError("kfold_accuracy needs at least two folds")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for fold in unique:
        test = ids == fold
        threshold, _ = best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] >= threshold) == y[test])))
        thresholds.append(threshold)
    acc = np.asarray(accuracies)
    return KFoldResult(
        accuracies=tuple(accuracies),
        mean=float(acc.mean()),
        std=float(acc.std()),
        thresholds=tuple(thresholds),
        fold_ids=tuple(int(f) for f in unique),
    )


# -------------------------------------------------------------------- identification
def rank_k_accuracy(
    similarities: Any,
    probe_labels: Any,
    gallery_labels: Any,
    ks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """Closed-set identification rate at rank k (points of the CMC curve).

    Gallery entries are first reduced to identities: each probe's similarity to an identity
    is its maximum similarity over that identity's entries. A probe is a hit at rank k when
    fewer than k *other* identities score at least as high as its true identity (ties are
    counted against the probe, so the result never depends on sort order).

    Args:
        similarities: (P, G) probe-by-gallery similarity matrix.
        probe_labels: (P,) identity label of each probe (ints or strings).
        gallery_labels: (G,) identity label of each gallery entry; labels may repeat.
        ks: ranks to report, each >= 1.

    Returns:
        ``{k: fraction of probes that are hits at rank k}``.

    Raises:
        ValueError: shapes disagree, ``ks`` is invalid, or a probe's identity is not in the
            gallery (closed-set search requires it).
    """
    sim = np.asarray(similarities)
    if sim.ndim != 2 or sim.size == 0:
        raise InvalidArgumentError(
            f"similarities must be a non-empty (P, G) matrix, got {sim.shape}"
        )
    if not np.all(np.isfinite(sim)):
        raise InvalidArgumentError("similarities contain NaN or infinite values")
    num_probes, num_gallery = sim.shape
    probes = np.asarray(probe_labels)
    gallery = np.asarray(gallery_labels)
    if probes.shape != (num_probes,):
        raise InvalidArgumentError(
            f"probe_labels must have shape ({num_probes},), got {probes.shape}"
        )
    if gallery.shape != (num_gallery,):
        raise InvalidArgumentError(
            f"gallery_labels must have shape ({num_gallery},), got {gallery.shape}"
        )
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise InvalidArgumentError(f"ks must be a non-empty sequence of ranks >= 1, got {ks}")

    identities, inverse = np.unique(gallery, return_inverse=True)
    inverse = inverse.reshape(-1)
    position = np.searchsorted(identities, probes)
    position = np.clip(position, 0, identities.size - 1)
    present = identities[position] == probes
    if not present.all():
        missing = np.unique(probes[~present])
        raise InvalidArgumentError(
            f"{int((~present).sum())} probe(s) have identities missing from the gallery "
            f"(e.g. {missing[:5].tolist()}); closed-set rank-k needs every probe enrolled"
        )
    # max similarity per identity: group gallery columns by identity, reduce each group
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])
    per_identity = np.maximum.reduceat(sim[:, order], starts, axis=1)  # (P, identities)
    true_score = per_identity[np.arange(num_probes), position]
    rivals = (per_identity >= true_score[:, None]).sum(axis=1) - 1
    return {k: float(np.mean(rivals < k)) for k in ks}


def tpir_at_fpir(
    mated_top1_scores: Any,
    mated_top1_correct: Any,
    nonmated_top1_scores: Any,
    fpir: float,
) -> tuple[float, float]:
    """Open-set true positive identification rate at a false positive identification rate.

    The threshold is the smallest one for which the fraction of non-mated probes (whose
    identity is not enrolled) with top-1 score ``>= threshold`` is at most ``fpir``; it is
    chosen exactly as in :func:`threshold_at_far`, including the case ``fpir < 1 / N``
    (threshold just above the highest non-mated score).

    Args:
        mated_top1_scores: (M,) top-1 similarity of each mated probe (identity enrolled).
        mated_top1_correct: (M,) booleans, True when that top-1 candidate is the probe's
            identity.
        nonmated_top1_scores: (N,) top-1 similarity of each non-mated probe.
        fpir: target false positive identification rate in [0, 1].

    Returns:
        ``(tpir, threshold)``: the fraction of mated probes whose top-1 is correct *and*
        scores ``>= threshold``, and the threshold.

    Raises:
        ValueError: shapes disagree, inputs are empty/non-finite, or ``fpir`` outside [0, 1].
    """
    mated = _as_scores(mated_top1_scores, "mated_top1_scores")
    correct = _as_labels(mated_top1_correct, mated.size, "mated_top1_correct")
    nonmated = _as_scores(nonmated_top1_scores, "nonmated_top1_scores")
    fpir = _check_rate(fpir, "fpir")
    threshold = _threshold_for_rate(nonmated, fpir)
    tpir = float(np.mean(correct & (mated >= threshold)))
    return tpir, threshold


# ------------------------------------------------------------------------- report
@dataclass(frozen=True)
class VerificationReport:
    """Summary of a verification benchmark.

    Attributes:
        accuracy_mean: mean k-fold accuracy (see :func:`kfold_accuracy`).
        accuracy_std: population std of the per-fold accuracies.
        auc: area under the ROC curve on all pairs.
        tar_at_far: ``{far: TAR}`` on all pairs (see :func:`tar_at_far`).
        threshold_at_far: ``{far: threshold}`` on all pairs.
        thresholds: per-fold thresholds of the k-fold protocol.
        accuracies: per-fold accuracies.
        best_threshold: accuracy-maximising threshold on all pairs (a starting point for a
            deployment threshold; the k-fold accuracy is the unbiased number).
        num_genuine: number of genuine pairs.
        num_impostor: number of impostor pairs (FARs below ``1 / num_impostor`` are not
            resolved by the data).
    """

    accuracy_mean: float
    accuracy_std: float
    auc: float
    tar_at_far: dict[float, float]
    threshold_at_far: dict[float, float]
    thresholds: tuple[float, ...]
    accuracies: tuple[float, ...]
    best_threshold: float
    num_genuine: int
    num_impostor: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (FAR keys become strings, e.g. ``"0.001"``)."""
        return {
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "auc": self.auc,
            "tar_at_far": {str(far): tar for far, tar in self.tar_at_far.items()},
            "threshold_at_far": {str(far): t for far, t in self.threshold_at_far.items()},
            "thresholds": list(self.thresholds),
            "accuracies": list(self.accuracies),
            "best_threshold": self.best_threshold,
            "num_genuine": self.num_genuine,
            "num_impostor": self.num_impostor,
        }


def evaluate_verification(
    scores: Any,
    labels: Any,
    folds: int | Sequence[int] | np.ndarray = 10,
    fars: Sequence[float] = (1e-3, 1e-4),
) -> VerificationReport:
    """Run the whole verification evaluation on one set of scored pairs.

    Args:
        scores: (n,) similarity scores.
        labels: (n,) booleans or 0/1, True for genuine pairs. Both classes must occur.
        folds: fold id per pair, or a number of contiguous folds (see :func:`kfold_accuracy`).
        fars: false accept rates at which to report TAR and the threshold.

    Returns:
        The report.

    Raises:
        ValueError: bad inputs, a missing class, or fewer than two folds.
    """
    s, y = _scores_labels(scores, labels)
    _both_classes(y, "evaluate_verification")
    kfold = kfold_accuracy(s, y, folds)
    far, tar, _ = roc_curve(s, y)
    num_impostor = int((~y).sum())
    tars: dict[float, float] = {}
    thresholds: dict[float, float] = {}
    for target in fars:
        target = _check_rate(target, "far")
        if target * num_impostor < 1:
            logger.info(
                "FAR %g is below 1/%d impostor pairs: TAR@FAR uses the threshold just above "
                "the highest impostor score",
                target,
                num_impostor,
            )
        thresholds[target] = threshold_at_far(s, y, target)
        tars[target] = float(np.mean(s[y] >= thresholds[target]))
    best, _ = best_threshold(s, y)
    return VerificationReport(
        accuracy_mean=kfold.mean,
        accuracy_std=kfold.std,
        auc=auc(far, tar),
        tar_at_far=tars,
        threshold_at_far=thresholds,
        thresholds=kfold.thresholds,
        accuracies=kfold.accuracies,
        best_threshold=best,
        num_genuine=int(y.sum()),
        num_impostor=num_impostor,
    )
