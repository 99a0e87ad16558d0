"""Draw detections on an image (for ``npcface detect --draw``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .results import Face

_LANDMARK_COLOURS = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255))


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of a BGR image with each face's box, landmarks and score drawn on it."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thick)
        for (x, y), colour in zip(face.landmarks, _LANDMARK_COLOURS, strict=True):
            cv2.circle(out, (round(float(x)), round(float(y))), thick + 1, colour, -1)
        cv2.putText(
            out,
            f"{face.score:.2f}",
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 255, 0),
            thick,
        )
    return out


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write a BGR image; the format follows the file extension."""
    ok, buf = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise ImageError(f"{path}: cannot encode an image with this extension")
    Path(path).write_bytes(buf.tobytes())


def face_thumbnail(image: np.ndarray, box: Sequence[float], side: int = 96) -> bytes | None:
    """A square JPEG of one face with a margin (a contact sheet's picture).

    Args:
        image: (H, W, 3) BGR image.
        box: (x1, y1, x2, y2) the face's box in pixels.
        side: pixels of the square.

    Returns:
        The JPEG bytes, or None when the box holds less than 2 x 2 pixels of the image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    half = max(x2 - x1, y2 - y1) * 0.65
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    a, b = int(max(0.0, cx - half)), int(max(0.0, cy - half))
    c, d = int(min(w, cx + half)), int(min(h, cy + half))
    if c - a < 2 or d - b < 2:
        return None
    crop = cv2.resize(image[b:d, a:c], (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else None
