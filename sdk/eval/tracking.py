"""Multi-object tracking metrics: identity switches, fragmentation (CLEAR MOT, Bernardin
and Stiefelhagen 2008) and IDF1 (Ristani et al., "Performance Measures and a Data Set for
Multi-Target, Multi-Camera Tracking", ECCV 2016 workshops), by their definitions.

Input: per frame, the ground-truth boxes ``{frame: [(gt_id, box), ...]}`` and the
tracker's ``{frame: [(track_id, box), ...]}``; boxes are (x1, y1, x2, y2) pixels. A tracker
box matches a ground-truth box at IoU >= ``iou`` (0.5).

- **ID switches**: per frame, matches made the CLEAR MOT way (an object's last
  correspondence, made in any earlier frame, is kept while its IoU holds and that track is
  not already taken; the rest by the most pairs at IoU >= ``iou``, then the least total
  distance 1 - IoU); a switch is a ground-truth object matched to another track than at its
  last match. An object missed for a while and found again by the same track is a
  fragmentation, not a switch. The same rules as py-motmetrics' ``MOTAccumulator``
  (``tests/test_eval_tracking.py`` checks the two agree on random scenes).
- **Fragmentations**: times a ground-truth trajectory goes from matched to unmatched and is
  matched again later.
- **IDF1**: one-to-one assignment of whole ground-truth trajectories to whole tracks that
  maximises the frames in which they match (IDTP); IDF1 = 2 IDTP / (ground-truth boxes +
  tracker boxes).

Plain numpy plus SciPy's assignment solver (``linear_sum_assignment``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Boxes = Mapping[int, Sequence[tuple[int, Sequence[float]]]]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in (n, 4) ``a`` with every box in (m, 4) ``b``: (n, m)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass(frozen=True)
class TrackingScores:
    """Scores of a tracker against ground truth.

    Attributes:
        gt_boxes, pred_boxes: boxes counted on each side.
        matches: (frame, gt id, track id) of every per-frame match.
        id_switches: CLEAR MOT identity switches.
        switches: (frame, gt id, track before, track after) of each of them.
        fragmentations: interruptions of matched ground-truth trajectories.
        idtp: frames matched under the best one-to-one trajectory assignment.
        idf1: 2 idtp / (gt_boxes + pred_boxes), in [0, 1].
        recall: share of ground-truth boxes matched in their frame.
        assignment: ground-truth id -> its track id under IDF1's assignment.
    """

    gt_boxes: int
    pred_boxes: int
    matches: tuple[tuple[int, int, int], ...]
    id_switches: int
    fragmentations: int
    idtp: int
    idf1: float
    recall: float
    assignment: dict[int, int]
    switches: tuple[tuple[int, int, int, int], ...] = ()


def _frame_matches(
    gt: Sequence[tuple[int, Sequence[float]]],
    pred: Sequence[tuple[int, Sequence[float]]],
    keep: Mapping[int, int],
    iou: float,
) -> list[tuple[int, int]]:
    from scipy.optimize import linear_sum_assignment

    if not gt or not pred:
        return []
    m = iou_matrix(np.array([b for _, b in gt]), np.array([b for _, b in pred]))
    gids, pids = [g for g, _ in gt], [p for p, _ in pred]
    out: list[tuple[int, int]] = []
    used_g, used_p = set(), set()
    for i, g in enumerate(gids):  # CLEAR MOT: established pairs stay while they overlap
        p = keep.get(g)
        if p is not None and p in pids:
            j = pids.index(p)
            if j not in used_p and m[i, j] >= iou:
                out.append((g, p))
                used_g.add(i)
                used_p.add(j)
    rest_g = [i for i in range(len(gids)) if i not in used_g]
    rest_p = [j for j in range(len(pids)) if j not in used_p]
    if rest_g and rest_p:
        sub = m[np.ix_(rest_g, rest_p)]
        # the most pairs at IoU >= iou, then the least total distance (1 - IoU) among them:
        # a pair under the threshold costs more than any set of valid pairs can save, so it
        # never displaces a valid pairing (maximising the plain IoU sum could)
        cost = np.where(sub >= iou, 1.0 - sub, float(len(sub) + len(sub[0]) + 1))
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if sub[r, c] >= iou:
                out.append((gids[rest_g[r]], pids[rest_p[c]]))
    return out


def tracking_scores(gt: Boxes, pred: Boxes, iou: float = 0.5) -> TrackingScores:
    """ID switches, fragmentations and IDF1 of ``pred`` against ``gt`` (see the module)."""
    from scipy.optimize import linear_sum_assignment

    frames = sorted(set(gt) | set(pred))
    last: dict[int, int] = {}  # gt id -> track id at its last match
    switches: list[tuple[int, int, int, int]] = []
    matches: list[tuple[int, int, int]] = []
    matched_frames: dict[int, list[tuple[int, bool]]] = {}
    for f in frames:
        pairs = _frame_matches(gt.get(f, ()), pred.get(f, ()), last, iou)
        now = dict(pairs)
        for g, p in pairs:
            if g in last and last[g] != p:
                switches.append((f, g, last[g], p))
            last[g] = p
            matches.append((f, g, p))
        for g, _ in gt.get(f, ()):
            matched_frames.setdefault(g, []).append((f, g in now))
    frag = 0
    for seq in matched_frames.values():
        flags = [m for _, m in seq]
        for k in range(1, len(flags)):
            if flags[k] and not flags[k - 1] and any(flags[:k]):
                frag += 1
    n_gt = sum(len(v) for v in gt.values())
    n_pred = sum(len(v) for v in pred.values())
    gids = sorted({g for v in gt.values() for g, _ in v})
    pids = sorted({p for v in pred.values() for p, _ in v})
    idtp, assignment = 0, {}
    if gids and pids:
        overlap = np.zeros((len(gids), len(pids)), np.int64)
        gi, pi = {g: i for i, g in enumerate(gids)}, {p: i for i, p in enumerate(pids)}
        for f in frames:  # frames where a trajectory pair is both present and overlapping
            g_here, p_here = gt.get(f, ()), pred.get(f, ())
            if not g_here or not p_here:
                continue
            m = iou_matrix(np.array([b for _, b in g_here]), np.array([b for _, b in p_here]))
            for a, (g, _) in enumerate(g_here):
                for b, (p, _) in enumerate(p_here):
                    if m[a, b] >= iou:
                        overlap[gi[g], pi[p]] += 1
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols, strict=True):
            if overlap[r, c] > 0:
                idtp += int(overlap[r, c])
                assignment[gids[r]] = pids[c]
    idf1 = 2 * idtp / (n_gt + n_pred) if n_gt + n_pred else 1.0
    return TrackingScores(
        n_gt,
        n_pred,
        tuple(matches),
        len(switches),
        frag,
        idtp,
        idf1,
        len(matches) / n_gt if n_gt else 1.0,
        assignment,
        tuple(switches),
    )
