"""Tracking metrics against a case worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from npcface.eval.tracking import iou_matrix, tracking_scores  # noqa: E402

A, B, FP = (0, 0, 10, 10), (100, 0, 110, 10), (200, 0, 210, 10)


def test_hand_worked_case():
    """A is followed by track 7 in frames 0-2, then by track 8 (one switch); B by track 9,
    missed in frame 2 (one fragmentation); track 10 is a false positive in frames 0-1.
    Boxes: 12 ground truth, 13 tracked. IDF1's assignment: A -> 7 or 8 (3 frames either
    way), B -> 9 (5 frames): IDTP 8, IDF1 = 16 / 25. Recall: 11 of 12 matched."""
    gt = {f: [(1, A), (2, B)] for f in range(6)}
    pred = {f: [(7 if f < 3 else 8, A)] for f in range(6)}
    for f in (0, 1, 3, 4, 5):
        pred[f].append((9, B))
    for f in (0, 1):
        pred[f].append((10, FP))
    s = tracking_scores(gt, pred)
    assert (s.gt_boxes, s.pred_boxes) == (12, 13)
    assert s.id_switches == 1 and s.switches == ((3, 1, 7, 8),)
    assert s.fragmentations == 1
    assert s.idtp == 8 and s.idf1 == pytest.approx(16 / 25)
    assert s.recall == pytest.approx(11 / 12)
    assert s.assignment[2] == 9 and s.assignment[1] in (7, 8)


def test_a_kept_match_is_not_switched_by_a_better_overlap():
    """CLEAR MOT keeps last frame's pair while it overlaps at the threshold, even when
    another track overlaps more: no switch."""
    near = (0, 0, 10, 11)  # IoU with A: 10/11
    gt = {0: [(1, A)], 1: [(1, A)]}
    pred = {0: [(5, near)], 1: [(5, near), (6, A)]}
    assert tracking_scores(gt, pred).id_switches == 0


def test_iou_matrix():
    m = iou_matrix(np.array([A, (5, 0, 15, 10)]), np.array([A]))
    np.testing.assert_allclose(m[:, 0], [1.0, 50 / 150])


def test_a_match_kept_across_a_gap_is_not_a_switch():
    """Object A is followed by track 5, missed for two frames (a fragmentation), then found
    again: track 5 still overlaps it at the threshold, so the established pair is kept
    although a new track 6 overlaps A better; not a switch (CLEAR MOT keeps the last
    correspondence, py-motmetrics does the same)."""
    near = (0, 0, 10, 12)  # IoU with A: 10/12
    gt = {f: [(1, A)] for f in range(6)}
    pred = {0: [(5, near)], 1: [(5, near)], 2: [], 3: [], 4: [(5, near), (6, A)]}
    pred[5] = [(5, near), (6, A)]
    s = tracking_scores(gt, pred)
    assert s.id_switches == 0 and s.fragmentations == 1
    assert [p for f, _, p in s.matches if f >= 4] == [5, 5]


def test_a_pair_under_the_threshold_does_not_displace_valid_ones():
    """Two objects, two tracks: pairing 1-5 (IoU 0.55) and 2-6 (0.51) is the only
    assignment with two valid pairs; the IoU sum is larger for 1-6 (0.95) with 2-5 (0.22,
    invalid). Both objects must be matched."""
    gt = {0: [(1, (0, 0, 10, 10)), (2, (3.5, 0, 13.5, 10))]}
    pred = {0: [(5, (-2.9, 0, 7.1, 10)), (6, (0.25, 0, 10.25, 10))]}
    s = tracking_scores(gt, pred)
    assert sorted((g, p) for _, g, p in s.matches) == [(1, 5), (2, 6)]


def test_agrees_with_py_motmetrics_on_random_sequences():
    """Switches, fragmentations, matches and IDF1 against py-motmetrics' accumulator (the
    MOTChallenge reference implementation) on 200 random scenes: jittered boxes, missed
    detections, tracks that change id and tracks that take over another object."""
    mm = pytest.importorskip("motmetrics")
    import random

    for seed in range(200):
        r = random.Random(seed)
        n = r.randint(1, 4)
        pos = [[r.uniform(0, 100), r.uniform(0, 100)] for _ in range(n)]
        ids = [r.randint(1, 3) for _ in range(n)]
        gt: dict = {}
        pred: dict = {}
        for f in range(40):
            gt[f], pred[f], used = [], [], set()
            for k in range(n):
                pos[k][0] += r.uniform(-6, 6)
                pos[k][1] += r.uniform(-6, 6)
                box = (pos[k][0], pos[k][1], pos[k][0] + 20, pos[k][1] + 20)
                gt[f].append((k, box))
                if r.random() < 0.1:
                    ids[k] = r.randint(1, 6)
                if r.random() < 0.85:
                    dx, dy = r.uniform(-4, 4), r.uniform(-4, 4)
                    tid = ids[k] * 10 + (k if r.random() < 0.9 else (k + 1) % n)
                    if tid not in used:
                        used.add(tid)
                        pred[f].append((tid, (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)))
        acc = mm.MOTAccumulator(auto_id=False)
        for f in sorted(gt):
            g_boxes = np.array([b for _, b in gt[f]]).reshape(-1, 4)
            p_boxes = np.array([b for _, b in pred[f]]).reshape(-1, 4)
            dist = 1.0 - iou_matrix(g_boxes, p_boxes)  # its own iou_matrix needs numpy < 2
            dist[dist > 0.5] = np.nan
            acc.update([g for g, _ in gt[f]], [p for p, _ in pred[f]], dist, frameid=f)
        ref = mm.metrics.create().compute(
            acc, metrics=["num_switches", "num_fragmentations", "num_matches", "idf1"]
        )
        s = tracking_scores(gt, pred)
        assert s.id_switches == int(ref.num_switches.iloc[0]), seed
        assert s.fragmentations == int(ref.num_fragmentations.iloc[0]), seed
        assert len(s.matches) == int(ref.num_matches.iloc[0] + ref.num_switches.iloc[0]), seed
        assert s.idf1 == pytest.approx(float(ref.idf1.iloc[0])), seed
