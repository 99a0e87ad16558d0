"""1:N evaluation: rank-k and TPIR@FPIR through the gallery, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npcface.eval.identify import evaluate_identification, lfw_identify_protocol, run_lfw_identify


def _data(seed: int = 0, ids: int = 60, dim: int = 24, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(idx):
        v = centres[idx] + noise * rng.standard_normal((len(idx), dim)) / np.sqrt(dim)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    g_idx = np.r_[np.arange(ids), rng.integers(0, ids, 20)]  # some identities twice
    p_idx = rng.integers(0, ids // 2, 300)  # probes of the first half only
    names = np.array([f"p{i:03d}" for i in range(ids)])
    return sample(g_idx), names[g_idx], sample(p_idx), names[p_idx]


def _expected(g, g_lab, p, p_lab, fpir):
    """Brute force: per-identity max similarity, top-1, best other identity."""
    sims = p @ g.T
    ids = sorted(set(g_lab))
    per_id = np.stack([sims[:, g_lab == i].max(axis=1) for i in ids], axis=1)
    own = np.array([ids.index(lab) for lab in p_lab])
    top = per_id.argmax(axis=1)
    correct = top == own
    top_score = per_id.max(axis=1)
    others = per_id.copy()
    others[np.arange(len(p)), own] = -np.inf
    nonmated = others.max(axis=1)
    rank5 = np.mean([(per_id[i] > per_id[i, own[i]]).sum() < 5 for i in range(len(p))])
    # smallest threshold letting at most floor(fpir * N) non-mated searches through
    allowed = int(np.floor(fpir * len(nonmated)))
    thr = np.sort(nonmated)[::-1][allowed]
    tpir = np.mean(correct & (top_score > thr))
    return correct.mean(), rank5, tpir


def test_rank_and_tpir_match_brute_force() -> None:
    g, g_lab, p, p_lab = _data()
    report = evaluate_identification(g, g_lab, p, p_lab, fpirs=(0.1, 0.02))
    rank1, rank5, tpir = _expected(g, g_lab, p, p_lab, 0.1)
    assert 0.3 < rank1 < 0.99  # a test that can fail either way
    assert report["rank1"] == pytest.approx(rank1)
    assert report["rank1_from_gallery_search"] == pytest.approx(rank1)
    assert report["rank5"] == pytest.approx(rank5)
    assert report["tpir@fpir=0.1"] == pytest.approx(tpir)
    assert report["tpir@fpir=0.02"] == pytest.approx(_expected(g, g_lab, p, p_lab, 0.02)[2])
    assert report["probes"] == report["probes_searched"] == report["nonmated_searches"] == 300


def test_failures_count_as_misses() -> None:
    g, g_lab, p, p_lab = _data(seed=1)
    p_ok = np.ones(len(p), bool)
    p_ok[:30] = False
    g_ok = np.ones(len(g), bool)
    first_probe_identity = p_lab[40]
    g_ok[g_lab == first_probe_identity] = False  # that identity is never enrolled
    report = evaluate_identification(g, g_lab, p, p_lab, probe_ok=p_ok, gallery_ok=g_ok)
    valid = p_ok & (p_lab != first_probe_identity)
    rank1, _, _ = _expected(g[g_ok], g_lab[g_ok], p[valid], p_lab[valid], 0.1)
    assert report["probes_missed_no_embedding"] == 30
    assert report["probes_missed_identity_not_enrolled"] == int((p_ok & ~valid).sum()) > 0
    assert report["rank1"] == pytest.approx(rank1 * valid.sum() / len(p))


def test_lfw_protocol_shape(lfw_dir: Path) -> None:
    proto = lfw_identify_protocol(lfw_dir)
    assert proto.gallery_identities == len(proto.gallery) == 5749
    assert proto.mated_identities == 1680
    assert len(proto.gallery) + len(proto.probes) == 13233
    assert all(p.name.endswith("_0001.jpg") for p, _ in proto.gallery)
    assert {lab for _, lab in proto.probes} <= {lab for _, lab in proto.gallery}


def test_run_lfw_identify_small(lfw_dir: Path) -> None:
    rec = pytest.importorskip("npcface.recognizer").FaceRecognizer(face_policy="center")
    report = run_lfw_identify(lfw_dir, rec, progress=False, max_people=20)
    assert report["model"] == rec.info.name and report["probes"] > 0
    assert 0.5 <= report["rank1"] <= 1.0
    assert 0.0 <= report["tpir@fpir=0.1"] <= report["rank1"] + 1e-9
