"""Metrics checked against independent brute-force computations and hand-worked cases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from npcface.errors import MissingExtraError
from npcface.eval import (
    KFoldResult,
    auc,
    best_threshold,
    evaluate_verification,
    kfold_accuracy,
    plot_roc,
    rank_k_accuracy,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    tpir_at_fpir,
)


def _tied_scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping genuine/impostor scores rounded to 2 decimals, so ties are frequent."""
    labels = rng.random(n) < 0.4
    scores = np.where(labels, rng.normal(0.5, 0.2, n), rng.normal(0.2, 0.2, n))
    return np.round(scores, 2), labels


# ----------------------------------------------------------------------------- ROC / AUC
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_matches_brute_force(seed: int) -> None:
    scores, labels = _tied_scores(np.random.default_rng(seed), 300)
    far, tar, thresholds = roc_curve(scores, labels)

    expected_thresholds = [np.inf, *sorted(set(scores.tolist()), reverse=True)]
    np.testing.assert_array_equal(thresholds, expected_thresholds)
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    for i, t in enumerate(expected_thresholds):
        assert far[i] == pytest.approx(sum(s >= t for s in neg) / len(neg))
        assert tar[i] == pytest.approx(sum(s >= t for s in pos) / len(pos))
    assert (far[0], tar[0]) == (0.0, 0.0)
    assert (far[-1], tar[-1]) == (1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_equals_mann_whitney_probability(seed: int) -> None:
    # AUC = P(genuine > impostor) + 0.5 P(tie), counted over all genuine x impostor pairs;
    # the trapezoid over the exact (tie-aware) ROC must reproduce it.
    scores, labels = _tied_scores(np.random.default_rng(seed), 400)
    pos, neg = scores[labels], scores[~labels]
    expected = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    far, tar, _ = roc_curve(scores, labels)
    assert auc(far, tar) == pytest.approx(expected, abs=1e-12)


def test_auc_extremes_and_errors() -> None:
    assert auc(*roc_curve([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[:2]) == 1.0
    assert auc(*roc_curve([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])[:2]) == 0.0
    assert auc(*roc_curve([0.5, 0.5, 0.5, 0.5], [1, 1, 0, 0])[:2]) == 0.5
    with pytest.raises(ValueError, match="non-decreasing"):
        auc([0.0, 1.0, 0.5], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="both genuine"):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        roc_curve([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        roc_curve([0.1, 0.2], [1, 2])


# ------------------------------------------------------------------------ TAR @ FAR
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("far", [0.1, 0.01, 1e-3, 3e-4, 1e-5])
def test_threshold_at_far_on_gaussians(far: float, dtype: type) -> None:
    rng = np.random.default_rng(7)
    neg = rng.normal(0.0, 1.0, 5000).astype(dtype)
    pos = rng.normal(2.5, 1.0, 1000).astype(dtype)
    scores = np.concatenate([pos, neg])
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]

    t = threshold_at_far(scores, labels, far)
    assert np.mean(neg >= t) <= far
    lower = np.nextafter(dtype(t), dtype(-np.inf))  # a hair lower: FAR must exceed target
    assert np.mean(neg >= lower) > far
    # the threshold still separates after a cast to the scores' dtype
    assert np.mean(neg >= dtype(t)) <= far
    if far < 1 / neg.size:
        assert t == np.nextafter(neg.max(), dtype(np.inf))
    assert tar_at_far(scores, labels, far) == np.mean(pos >= t)


@pytest.mark.parametrize("far", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_tar_at_far_is_the_best_tar_within_budget(far: float) -> None:
    # brute force: over every threshold that changes the decisions (each score, and just
    # above each score), the highest TAR among thresholds with FAR <= far
    scores, labels = _tied_scores(np.random.default_rng(3), 200)
    pos, neg = scores[labels], scores[~labels]
    candidates = np.unique(np.r_[scores, np.nextafter(scores, np.inf)])
    fars = (neg[None, :] >= candidates[:, None]).mean(axis=1)
    tars = (pos[None, :] >= candidates[:, None]).mean(axis=1)
    expected = tars[fars <= far].max()
    assert tar_at_far(scores, labels, far) == pytest.approx(expected)


def test_threshold_at_far_rejects_bad_far() -> None:
    with pytest.raises(ValueError, match="far"):
        threshold_at_far([0.1, 0.2], [1, 0], 1.5)
    with pytest.raises(ValueError, match="impostor"):
        threshold_at_far([0.1, 0.2], [1, 1], 0.1)


# -------------------------------------------------------------------- best threshold
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_best_threshold_matches_brute_force(seed: int) -> None:
    scores, labels = _tied_scores(np.random.default_rng(seed), 250)
    # every achievable decision set is {score >= u} for a distinct score u, or "accept none"
    distinct = np.unique(scores)
    accs = [np.mean((scores >= u) == labels) for u in distinct] + [np.mean(~labels)]
    best = int(np.argmax(accs))

    t, acc = best_threshold(scores, labels)
    assert acc == pytest.approx(accs[best])
    assert np.mean((scores >= t) == labels) == pytest.approx(acc)
    # the smallest maximiser: same accept set as the first best candidate
    if best < distinct.size:
        assert (distinct[best - 1] if best else -np.inf) < t <= distinct[best]
    else:
        assert t > distinct[-1]


def test_best_threshold_small_cases() -> None:
    # perfectly separable: midpoint between 0.4 and 0.6
    t, acc = best_threshold([0.9, 0.6, 0.4, 0.1], [1, 1, 0, 0])
    assert (t, acc) == (pytest.approx(0.5), 1.0)
    # all genuine: accept everything at the lowest score
    assert best_threshold([0.3, 0.7], [1, 1]) == (0.3, 1.0)
    # all impostor: accept nothing, just above the highest score
    t, acc = best_threshold([0.3, 0.7], [0, 0])
    assert acc == 1.0 and t > 0.7 and t == np.nextafter(0.7, 1.0)


# ----------------------------------------------------------------------------- k-fold
# Six pairs, three folds of two:
#   fold 0: (0.9, same) (0.1, diff)   fold 1: (0.8, same) (0.3, diff)
#   fold 2: (0.4, same) (0.6, diff)
# Hold out fold 0 -> train {0.8S, 0.3D, 0.4S, 0.6D}; accuracy by cut: accept all 2/4,
#   t=0.35 3/4, t=0.5 2/4, t=0.7 3/4, none 2/4 -> smallest best t=0.35; test: 0.9>=t ok,
#   0.1<t ok -> 1.0
# Hold out fold 1 -> train {0.9S, 0.1D, 0.4S, 0.6D}; cuts: 2/4, t=0.25 3/4, t=0.5 2/4,
#   t=0.75 3/4, none 2/4 -> t=0.25; test: 0.8 ok, 0.3>=0.25 accepted wrongly -> 0.5
# Hold out fold 2 -> train {0.9S, 0.1D, 0.8S, 0.3D}; cuts: 2/4, t=0.2 3/4, t=0.55 4/4,
#   t=0.85 3/4, none 2/4 -> t=0.55; test: 0.4 rejected wrongly, 0.6 accepted wrongly -> 0.0
# mean = 0.5; population std = sqrt((0.25 + 0 + 0.25) / 3) = sqrt(1/6) = 0.40824829
HAND_SCORES = [0.9, 0.1, 0.8, 0.3, 0.4, 0.6]
HAND_LABELS = [1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("folds", [[0, 0, 1, 1, 2, 2], 3])
def test_kfold_accuracy_hand_case(folds: list[int] | int) -> None:
    result = kfold_accuracy(HAND_SCORES, HAND_LABELS, folds)
    assert isinstance(result, KFoldResult)
    assert result.accuracies == pytest.approx((1.0, 0.5, 0.0))
    assert result.thresholds == pytest.approx((0.35, 0.25, 0.55))
    assert result.mean == pytest.approx(0.5)
    assert result.std == pytest.approx(0.40824829)
    assert result.fold_ids == (0, 1, 2)


def test_kfold_accuracy_fold_ids_need_not_be_contiguous() -> None:
    # same pairs, shuffled, fold ids given per pair: same answer
    order = [5, 2, 0, 3, 1, 4]
    ids = np.array([0, 0, 1, 1, 2, 2])[order]
    result = kfold_accuracy(np.array(HAND_SCORES)[order], np.array(HAND_LABELS)[order], ids)
    assert result.accuracies == pytest.approx((1.0, 0.5, 0.0))


def test_kfold_accuracy_errors() -> None:
    with pytest.raises(ValueError, match="two folds"):
        kfold_accuracy(HAND_SCORES, HAND_LABELS, [0] * 6)
    with pytest.raises(ValueError, match="folds"):
        kfold_accuracy(HAND_SCORES, HAND_LABELS, 1)
    with pytest.raises(ValueError, match="shape"):
        kfold_accuracy(HAND_SCORES, HAND_LABELS, [0, 1])


def test_evaluate_verification_report() -> None:
    rng = np.random.default_rng(11)
    labels = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.where(labels, rng.normal(0.6, 0.15, 600), rng.normal(0.1, 0.15, 600))
    folds = np.repeat(np.arange(10), 60)
    report = evaluate_verification(scores, labels, folds, fars=(1e-2, 1e-4))

    kfold = kfold_accuracy(scores, labels, folds)
    assert report.accuracy_mean == kfold.mean and report.accuracy_std == kfold.std
    assert report.tar_at_far[1e-2] == tar_at_far(scores, labels, 1e-2)
    assert report.threshold_at_far[1e-4] == np.nextafter(scores[~labels].max(), np.inf)
    assert (report.num_genuine, report.num_impostor) == (300, 300)
    data = json.loads(json.dumps(report.to_dict()))
    assert {"accuracy_mean", "accuracy_std", "auc", "tar_at_far", "thresholds"} <= set(data)
    assert set(data["tar_at_far"]) == {"0.01", "0.0001"}
    assert len(data["thresholds"]) == 10
    assert 0.9 < data["auc"] <= 1.0


# ---------------------------------------------------------------------- identification
def _rank_k_brute(sim, probe_labels, gallery_labels, ks):
    hits = {k: 0 for k in ks}
    for p in range(sim.shape[0]):
        best: dict = {}
        for g, label in enumerate(gallery_labels):
            best[label] = max(best.get(label, -np.inf), sim[p, g])
        # sort identities by score, ties put the true identity last (pessimistic)
        ranking = sorted(best, key=lambda lab: (-best[lab], lab == probe_labels[p]))
        rank = ranking.index(probe_labels[p]) + 1
        for k in ks:
            hits[k] += rank <= k
    return {k: hits[k] / sim.shape[0] for k in ks}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_k_matches_brute_force_with_duplicate_identities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gallery_labels = rng.integers(0, 12, size=30)  # ~2.5 entries per identity
    probe_labels = rng.choice(np.unique(gallery_labels), size=40)
    sim = np.round(rng.normal(size=(40, 30)), 1)  # coarse values -> ties
    sim[probe_labels[:, None] == gallery_labels[None, :]] += 0.8
    ks = (1, 2, 5, 50)
    got = rank_k_accuracy(sim, probe_labels, gallery_labels, ks)
    assert got == pytest.approx(_rank_k_brute(sim, probe_labels, gallery_labels, ks))
    assert got[50] == 1.0


def test_rank_k_hand_case_and_string_labels() -> None:
    gallery = ["a", "b", "a", "c"]
    sim = np.array(
        [
            [0.9, 0.5, 0.1, 0.2],  # probe a: a=0.9 best -> rank 1
            [0.1, 0.3, 0.8, 0.5],  # probe b: a=0.8, c=0.5 above b=0.3 -> rank 3
            [0.7, 0.1, 0.2, 0.6],  # probe c: a=max(0.7,0.2)=0.7 above c -> rank 2
        ]
    )
    got = rank_k_accuracy(sim, ["a", "b", "c"], gallery, ks=(1, 2, 3))
    assert got == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    with pytest.raises(ValueError, match="missing from the gallery"):
        rank_k_accuracy(sim, ["a", "b", "z"], gallery)


def test_tpir_at_fpir_hand_case() -> None:
    mated = [0.9, 0.8, 0.7, 0.4]
    correct = [True, False, True, True]
    nonmated = [0.75, 0.5, 0.3, 0.2]
    # fpir 0.25: one of four non-mated may pass -> t just above 0.5; correct and >= t:
    # 0.9 and 0.7 -> 2/4
    tpir, t = tpir_at_fpir(mated, correct, nonmated, 0.25)
    assert (tpir, t) == (0.5, np.nextafter(0.5, 1.0))
    # fpir 0: t just above 0.75 -> only 0.9 -> 1/4
    assert tpir_at_fpir(mated, correct, nonmated, 0.0) == (0.25, np.nextafter(0.75, 1.0))
    # fpir 0.5: t just above 0.3 -> 0.9, 0.7, 0.4 -> 3/4
    assert tpir_at_fpir(mated, correct, nonmated, 0.5)[0] == 0.75
    # fpir 1: everything passes; the wrong top-1 still never counts -> 3/4
    assert tpir_at_fpir(mated, correct, nonmated, 1.0) == (0.75, 0.2)


# ------------------------------------------------------------------------------- plot
def test_plot_roc_writes_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    scores, labels = _tied_scores(np.random.default_rng(0), 200)
    out = plot_roc(
        {"model A": roc_curve(scores, labels), "model B": roc_curve(scores, labels)[:2]},
        tmp_path / "sub" / "roc.png",
        title="test",
    )
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_roc_without_matplotlib(tmp_path, monkeypatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"npcface\[plot\]"):
        plot_roc({"a": ([0.1, 1.0], [0.5, 1.0])}, tmp_path / "roc.png")


def test_import_is_light() -> None:
    code = (
        "import sys, npcface.eval\n"
        "heavy = {'matplotlib', 'torch', 'sklearn'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
