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
    assert s.id_switches == 1
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
