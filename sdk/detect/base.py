"""The detector protocol and the post-processing every anchor-free/anchor-based detector shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from ..results import Face


@runtime_checkable
class Detector(Protocol):
    """Finds faces and their five landmarks in a BGR uint8 image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in original pixel coordinates, highest score first."""
        ...


def rescale_for_detection(
    image: np.ndarray, max_side: int | None, min_side: int | None = None
) -> tuple[np.ndarray, float]:
    """Resize so the longer side is at most ``max_side`` / at least ``min_side``.

    Returns the image to detect on and the factor to divide its coordinates by.
    """
    import cv2

    h, w = image.shape[:2]
    if max_side and max(h, w) > max_side:
        scale, interp = max_side / max(h, w), cv2.INTER_AREA
    elif min_side and max(h, w) < min_side:
        scale, interp = min_side / max(h, w), cv2.INTER_CUBIC
    else:
        return image, 1.0
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interp), scale


REFINE_BELOW = 112
"""A face found on a downscaled image gets a second look at full resolution when its side
in the detection image is below this many pixels (the recogniser's usual input size)."""
REFINE_MAX_FACES = 16
"""At most this many faces (best score first) get the second look, bounding its cost."""
REFINE_MARGIN = 0.6
"""The second look sees the face plus this fraction of its side on every side."""

TILE_BELOW = 0.5
"""A photo downscaled below this factor for detection in which nothing was found is looked at
again in overlapping tiles at twice the scale (a face of ~100 px in an 8000 x 6000 photo is
16 px at 0.16x: too small for RetinaFace, found in tiles at 0.32x)."""
TILE_OVERLAP = 0.125
"""Tiles overlap by this fraction of their side, so a face on a seam is whole in one tile."""

DetectArrays = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""A detector's raw pass: BGR image -> (N, 4) boxes, (N, 5, 2) landmarks, (N,) scores, in
that image's pixels, best score first."""


def detect_with_refinement(
    run: DetectArrays,
    image: np.ndarray,
    max_side: int | None,
    min_side: int | None,
    refine: bool = True,
) -> list[Face]:
    """Detect on a resized copy (see :func:`rescale_for_detection`), map back, and give
    small faces of a downscaled image a second look at full resolution.

    When nothing is found on a copy downscaled below :data:`TILE_BELOW`, the photo is looked
    at again in overlapping tiles at twice the scale (:func:`_tiled`); what they find then
    gets the second look like any small face.

    On a downscaled photo a small face spans few pixels, so its landmarks are coarse
    (a 100 px face in an 8000 x 6000 photo is 16 px at ``max_side=1280``). Each face whose
    side in the detection image is below :data:`REFINE_BELOW` is detected again on a
    window of the original image around it (downscaled only if the window itself exceeds
    ``max_side``), and the window's face that overlaps it most (IoU >= 0.3) replaces it.

    Returns:
        Faces in original pixel coordinates, boxes clipped to the image, best score first.
    """
    h0, w0 = image.shape[:2]
    small, scale = rescale_for_detection(image, max_side, min_side)
    boxes, pts, scores = run(small)
    if scale != 1.0:
        boxes = boxes / scale
        pts = pts / scale
    if refine and scale < TILE_BELOW and not len(scores) and max_side:
        boxes, pts, scores, scale = _tiled(run, image, max_side, 2 * scale)
    if refine and scale < 0.8 and len(scores):
        boxes, pts, scores = _refine(run, image, boxes, pts, scores, scale, max_side)
    return to_faces(boxes, pts, scores, (h0, w0))


def _refine(
    run: DetectArrays,
    image: np.ndarray,
    boxes: np.ndarray,
    pts: np.ndarray,
    scores: np.ndarray,
    scale: float,
    max_side: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h0, w0 = image.shape[:2]
    boxes, pts, scores = boxes.copy(), pts.copy(), np.array(scores, dtype=np.float32)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    todo = [i for i in range(len(scores)) if side[i] * scale < REFINE_BELOW][:REFINE_MAX_FACES]
    for i in todo:
        m = REFINE_MARGIN * side[i]
        x1, y1 = max(int(boxes[i, 0] - m), 0), max(int(boxes[i, 1] - m), 0)
        x2, y2 = min(int(np.ceil(boxes[i, 2] + m)), w0), min(int(np.ceil(boxes[i, 3] + m)), h0)
        if x2 - x1 < 8 or y2 - y1 < 8:
            continue
        window, wscale = rescale_for_detection(image[y1:y2, x1:x2], max_side)
        if wscale <= scale:
            continue  # no finer than the first look
        b, p, sc = run(window)
        if not len(sc):
            continue
        b = b / wscale + [x1, y1, x1, y1]
        p = p / wscale + [x1, y1]
        iou = _iou(boxes[i], b)
        j = int(np.argmax(iou))
        if iou[j] >= 0.3:
            boxes[i], pts[i], scores[i] = b[j], p[j], sc[j]
    order = np.argsort(-scores, kind="stable")
    return boxes[order], pts[order], scores[order]


def _tiled(
    run: DetectArrays, image: np.ndarray, max_side: int, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Detect in overlapping tiles of ``image``, each resized by ``scale`` to at most
    ``max_side``; boxes and landmarks in original pixels, duplicates on seams suppressed.
    Returns them with the scale they were found at."""
    h0, w0 = image.shape[:2]
    tile = int(max_side / scale)
    step = max(int(tile * (1 - TILE_OVERLAP)), 1)
    found_b, found_p, found_s = [], [], []
    for y in range(0, max(h0 - tile, 0) + step, step):
        for x in range(0, max(w0 - tile, 0) + step, step):
            y1, x1 = min(y, max(h0 - tile, 0)), min(x, max(w0 - tile, 0))
            part = image[y1 : y1 + tile, x1 : x1 + tile]
            small, s = rescale_for_detection(part, max_side)
            b, p, sc = run(small)
            if len(sc):
                found_b.append(b / s + [x1, y1, x1, y1])
                found_p.append(p / s + [x1, y1])
                found_s.append(np.asarray(sc, np.float32))
    if not found_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0), scale
    boxes, pts = np.concatenate(found_b), np.concatenate(found_p)
    scores = np.concatenate(found_s)
    keep = nms(boxes, scores, 0.4, len(scores))
    return boxes[keep], pts[keep], scores[keep], scale


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    w = np.maximum(0.0, np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]))
    h = np.maximum(0.0, np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]))
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def to_faces(
    boxes: np.ndarray,
    landmarks: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int] | None = None,
) -> list[Face]:
    """Faces from (N, 4) boxes, (N, 5, 2) landmarks and (N,) scores in original pixels.

    With ``image_size`` = (height, width), boxes are clipped to the image, so that
    ``img[int(y1):int(y2), int(x1):int(x2)]`` is the visible part of a face cut by the
    border; landmarks are left as detected (they may lie outside the image, and alignment
    needs them there).
    """
    if image_size is not None and len(boxes):
        h, w = image_size
        boxes = boxes.copy()
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return [
        Face(
            box=boxes[i].astype(np.float32),
            landmarks=landmarks[i].reshape(5, 2).astype(np.float32),
            score=float(scores[i]),
        )
        for i in range(len(scores))
    ]
