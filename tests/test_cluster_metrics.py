"""Clustering metrics (npcface.eval.clustering) against hand-worked cases and independent
computations: BCubed by its per-item definition, pairwise F and NMI from scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from npcface.errors import InvalidArgumentError
from npcface.eval.clustering import clustering_scores, noise_as_singletons


def bcubed_by_definition(truth: list, pred: list) -> tuple[float, float]:
    """Per item i: |C(i) & L(i)| / |C(i)| and / |L(i)|, averaged (O(N^2), no tables)."""
    n = len(truth)
    p = r = 0.0
    for i in range(n):
        cluster = {j for j in range(n) if pred[j] == pred[i]}
        klass = {j for j in range(n) if truth[j] == truth[i]}
        both = len(cluster & klass)
        p += both / len(cluster)
        r += both / len(klass)
    return p / n, r / n


def test_hand_worked_case() -> None:
    # truth: {0,1,2} {3,4}; predicted: {0,1} {2,3,4}
    truth = ["a", "a", "a", "b", "b"]
    pred = [7, 7, 3, 3, 3]
    s = clustering_scores(truth, pred)
    # BCubed precision per item: 1, 1, 1/3, 2/3, 2/3 -> 11/15; recall: 2/3, 2/3, 1/3, 1, 1
    assert s.bcubed_precision == pytest.approx(11 / 15)
    assert s.bcubed_recall == pytest.approx(11 / 15)
    assert s.bcubed_f == pytest.approx(11 / 15)
    # pairs predicted together: (0,1) (2,3) (2,4) (3,4); truly together: (0,1) (0,2) (1,2) (3,4)
    assert s.pairwise_precision == pytest.approx(2 / 4)
    assert s.pairwise_recall == pytest.approx(2 / 4)
    assert s.pairwise_f == pytest.approx(0.5)
    assert (s.items, s.clusters, s.classes) == (5, 2, 2)


def test_perfect_and_all_in_one() -> None:
    truth = [0, 0, 1, 1, 1, 2]
    perfect = clustering_scores(truth, [5, 5, 9, 9, 9, 1])
    assert perfect.bcubed_f == pytest.approx(1.0)
    assert perfect.pairwise_f == pytest.approx(1.0)
    assert perfect.nmi == pytest.approx(1.0)
    one = clustering_scores(truth, [0] * 6)
    # BCubed precision: items of class sizes 2, 3, 1 in one cluster of 6: (4 + 9 + 1) / 36
    assert one.bcubed_precision == pytest.approx(14 / 36)
    assert one.bcubed_recall == pytest.approx(1.0)
    assert one.pairwise_precision == pytest.approx(4 / 15)  # 1 + 3 true pairs of 15
    assert one.nmi == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_independent_computations(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 12, 150)
    pred = np.where(rng.random(150) < 0.7, truth, rng.integers(0, 20, 150))
    s = clustering_scores(truth, pred)
    p, r = bcubed_by_definition(truth.tolist(), pred.tolist())
    assert s.bcubed_precision == pytest.approx(p)
    assert s.bcubed_recall == pytest.approx(r)
    assert s.nmi == pytest.approx(metrics.normalized_mutual_info_score(truth, pred))
    # sklearn's pair confusion counts ordered pairs: [[tn, fp], [fn, tp]]
    (_, fp), (fn, tp) = metrics.pair_confusion_matrix(truth, pred)
    assert s.pairwise_precision == pytest.approx(tp / (tp + fp))
    assert s.pairwise_recall == pytest.approx(tp / (tp + fn))


def test_noise_as_singletons() -> None:
    out = noise_as_singletons(np.array([0, -1, 0, 1, -1]))
    assert out[0] == out[2] and out[3] == 1
    assert len({int(out[1]), int(out[4]), 0, 1}) == 4  # each noise item alone
    # noise left as one label would be one (wrong) cluster: the scores differ
    truth = [0, 1, 0, 2, 3]
    assert clustering_scores(truth, out).bcubed_f == pytest.approx(1.0)
    assert clustering_scores(truth, [0, -1, 0, 2, -1]).bcubed_f < 1.0


@pytest.mark.parametrize(
    ("truth", "pred"),
    [([0, 1], [0]), ([], []), ([[0, 1]], [[0, 1]])],
    ids=["lengths", "empty", "2-d"],
)
def test_bad_input_is_a_typed_error(truth: list, pred: list) -> None:
    with pytest.raises(InvalidArgumentError):
        clustering_scores(truth, pred)


def test_noise_as_singletons_needs_ints() -> None:
    with pytest.raises(InvalidArgumentError):
        noise_as_singletons(np.array([0.5, 1.0]))
