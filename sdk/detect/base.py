"""The detector protocol and the post-processing every anchor-free/anchor-based detector shares."""

from __future__ import annotations

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


def to_faces(boxes: np.ndarray, landmarks: np.ndarray, scores: np.ndarray) -> list[Face]:
    return [
        Face(
            box=boxes[i].astype(np.float32),
            landmarks=landmarks[i].reshape(5, 2).astype(np.float32),
            score=float(scores[i]),
        )
        for i in range(len(scores))
    ]
