"""Annotated video: boxes, track ids and names drawn on frames, written as H.264."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from ..errors import VideoError
from .analyze import TrackedFace
from .source import require_av


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track (golden-angle hues)."""
    import cv2

    hue = int((track_id * 137.508) % 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def annotate(image: np.ndarray, faces: Sequence[TrackedFace]) -> np.ndarray:
    """A copy of a BGR frame with each tracked face's box, track id and identity drawn
    (a face carried from an earlier detection is drawn with a thin box)."""
    import cv2

    out = image.copy()
    scale = max(image.shape[:2]) / 640
    thick = max(1, round(2 * scale))
    for tf in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in tf.face.box)
        colour = _colour(tf.track_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick if tf.detected else 1)
        label = f"#{tf.track_id}"
        if tf.identity is not None:
            label += f" {tf.identity} {tf.similarity:.2f}"
        font = 0.5 * scale
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        ty = max(y1 - 4, th + 4)
        cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty + base - 2), colour, -1)
        cv2.putText(out, label, (x1 + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick)
    return out


class VideoWriter:
    """Write BGR frames to an H.264 video (libx264 through PyAV).

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.mkv``, ...).
        fps: frames per second.
        crf: x264's constant rate factor (lower is better and larger).

    Raises:
        VideoError: the file cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, crf: int = 23) -> None:
        self.av = require_av()
        self.path = os.fspath(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        try:
            self._out = self.av.open(self.path, "w")
        except (self.av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"{self.path}: cannot write a video: {exc}", input=self.path) from exc
        self._stream = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Add one (H, W, 3) uint8 BGR frame (the first frame fixes the size)."""
        av = self.av
        if self._stream is None:
            h, w = image.shape[:2]
            s = self._out.add_stream("libx264", rate=self.fps)
            s.width, s.height = w - w % 2, h - h % 2  # yuv420p needs even sides
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(self.crf), "preset": "veryfast"}
            self._stream = s
        s = self._stream
        frame = av.VideoFrame.from_ndarray(image[: s.height, : s.width], format="bgr24")
        for packet in s.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._out.mux(packet)
        self._out.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
