"""Clustering metrics in plain numpy: BCubed precision/recall/F, pairwise F and NMI.

A clustering is a label per item (any integers or strings); so is the truth. Items a
clusterer left as noise must be given labels of their own (each noise item a singleton),
which is how face-clustering papers count them: a noise face is a cluster of one.

* **BCubed** (Bagga & Baldwin 1998; Amigo et al., "A comparison of extrinsic clustering
  evaluation metrics based on formal constraints", Information Retrieval 12, 2009): per item
  i, precision = |C(i) & L(i)| / |C(i)| and recall = |C(i) & L(i)| / |L(i)|, where C(i) is
  the predicted cluster holding i and L(i) its true class (i itself included in both);
  averaged over items. Every face weighs the same, so a person with 500 photos weighs 500
  times a person with one.
* **Pairwise** precision/recall/F: over unordered pairs of items, a pair is predicted same
  when both are in one cluster and truly same when both are in one class (the F of Shi et
  al., "Face Clustering: Representation and Pairwise Constraints", 2018). Pairs grow with the
  square of a class's size, so large classes dominate it.
* **NMI**: mutual information of the two labelings over the arithmetic mean of their
  entropies (scikit-learn's default normalisation), in [0, 1].

All three come from the contingency table n_kc (items of class k in cluster c):
BCubed P = sum n_kc^2 / |C_c| / N, R = sum n_kc^2 / |L_k| / N; pairwise true positives =
sum n_kc (n_kc - 1) / 2. O(N log N) time, O(N) memory: a million items take a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class ClusteringScores:
    """Extrinsic scores of a clustering against the truth, each in [0, 1].

    Attributes:
        bcubed_precision, bcubed_recall, bcubed_f: BCubed, averaged over items.
        pairwise_precision, pairwise_recall, pairwise_f: over unordered pairs of items (1.0
            when there is no pair to get right or wrong).
        nmi: normalised mutual information (arithmetic mean of the entropies).
        items: number of items; clusters: predicted clusters; classes: true classes.
    """

    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    nmi: float
    items: int
    clusters: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _codes(labels: Any, name: str, size: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one label per item, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise InvalidArgumentError(f"{name} has {arr.shape[0]} labels for {size} items")
    if arr.shape[0] == 0:
        raise InvalidArgumentError(f"{name} is empty")
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


def contingency(truth: Any, predicted: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells of the contingency table.

    Returns:
        ``(cells, class_sizes, cluster_sizes)``: ``cells`` (m, 3) int64 rows of (class code,
        cluster code, count) for every class/cluster pair that shares items; the sizes are
        indexed by those codes.

    Raises:
        InvalidArgumentError: not one label per item in each, or no items.
    """
    t = _codes(truth, "truth")
    p = _codes(predicted, "predicted", t.shape[0])
    pairs = t.astype(np.int64) * (int(p.max()) + 1) + p
    keys, counts = np.unique(pairs, return_counts=True)
    cells = np.stack([keys // (int(p.max()) + 1), keys % (int(p.max()) + 1), counts], axis=1)
    return cells, np.bincount(t), np.bincount(p)


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def _pairs(n: np.ndarray) -> float:
    n = n.astype(np.float64)
    return float((n * (n - 1) / 2).sum())


def _entropy(sizes: np.ndarray, total: int) -> float:
    p = sizes[sizes > 0] / total
    return float(-(p * np.log(p)).sum())


def clustering_scores(truth: Any, predicted: Any) -> ClusteringScores:
    """BCubed, pairwise and NMI scores of ``predicted`` against ``truth``.

    Args:
        truth: (N,) true class of each item (ints or strings).
        predicted: (N,) predicted cluster of each item; give noise items labels of their own.

    Returns:
        A :class:`ClusteringScores`.

    Raises:
        InvalidArgumentError: the two are not one label per item each, or empty.
    """
    cells, class_sizes, cluster_sizes = contingency(truth, predicted)
    k, c, n = cells[:, 0], cells[:, 1], cells[:, 2].astype(np.float64)
    total = int(class_sizes.sum())
    bp = float((n * n / cluster_sizes[c]).sum() / total)
    br = float((n * n / class_sizes[k]).sum() / total)
    tp = _pairs(cells[:, 2])
    pred_pairs, true_pairs = _pairs(cluster_sizes), _pairs(class_sizes)
    pp = tp / pred_pairs if pred_pairs else 1.0
    pr = tp / true_pairs if true_pairs else 1.0
    h_t, h_p = _entropy(class_sizes, total), _entropy(cluster_sizes, total)
    mi = float((n / total * np.log(n * total / (class_sizes[k] * cluster_sizes[c]))).sum())
    mean_h = (h_t + h_p) / 2
    nmi = 1.0 if mean_h == 0 else max(0.0, min(1.0, mi / mean_h))
    return ClusteringScores(
        bcubed_precision=bp,
        bcubed_recall=br,
        bcubed_f=_f(bp, br),
        pairwise_precision=pp,
        pairwise_recall=pr,
        pairwise_f=_f(pp, pr),
        nmi=nmi,
        items=total,
        clusters=int(cluster_sizes.size),
        classes=int(class_sizes.size),
    )


def noise_as_singletons(labels: Any, noise: int = -1) -> np.ndarray:
    """Integer labels with every ``noise`` item given a label of its own (above the others).

    Raises:
        InvalidArgumentError: not a 1-d integer array.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"labels must be a 1-d integer array, got {arr.dtype} {arr.shape}"
        )
    out = arr.astype(np.int64).copy()
    hit = out == noise
    start = int(out.max(initial=0)) + 1
    out[hit] = start + np.arange(int(hit.sum()))
    return out
