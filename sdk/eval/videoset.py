"""Videos composed from face photos, with their ground-truth tracks.

Each person ("actor") enters at a time, moves along a straight path across a fixed
background, grows or shrinks (walking towards or away from the camera), shows their photos
one after another (a person turning, when the photos are ordered by head yaw), and leaves.
Actors are drawn in order, so a later actor passes in front of (occludes) an earlier one
whose path it crosses. The ground truth of every frame is each visible actor's identity and
face box, known exactly from the geometry: the face box of each photo (found once by a
detector on the still photo) is carried through the same scaling and placement as its
pixels. A face less than :data:`VISIBLE` visible (covered by a later actor) has no
ground-truth entry in that frame.

Used by ``bench/video.py`` (on LFW photos) and the video tests (on photos that ship in
packages). Frames are encoded with H.264 through PyAV (the ``video`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VISIBLE = 0.5
"""Share of a face box that must be uncovered for it to count as a ground-truth face."""


@dataclass(frozen=True)
class Actor:
    """One person's appearance in a composed video.

    Attributes:
        identity: the person's name.
        photos: BGR uint8 photos shown in turn.
        boxes: (x1, y1, x2, y2) face box in each photo, pixels.
        enter, leave: seconds at which the actor appears and disappears.
        start, end: (x, y) face centre at ``enter`` and ``leave``, as fractions of the
            frame's width and height.
        size: (at enter, at leave) face box height as a fraction of the frame's height.
        photo_seconds: seconds each photo is shown before the next.
    """

    identity: str
    photos: tuple[np.ndarray, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    enter: float
    leave: float
    start: tuple[float, float]
    end: tuple[float, float]
    size: tuple[float, float]
    photo_seconds: float = 1.0

    def at(self, t: float) -> tuple[int, float, float, float] | None:
        """(photo index, centre x, centre y, face height) as fractions at time ``t``, or
        None when the actor is not in the scene."""
        if not self.enter <= t < self.leave:
            return None
        a = (t - self.enter) / max(self.leave - self.enter, 1e-9)
        x = self.start[0] + a * (self.end[0] - self.start[0])
        y = self.start[1] + a * (self.end[1] - self.start[1])
        h = self.size[0] + a * (self.size[1] - self.size[0])
        i = int((t - self.enter) / self.photo_seconds) % len(self.photos)
        return i, x, y, h


@dataclass(frozen=True)
class TruthBox:
    """One ground-truth face in one frame: ``actor`` (index), ``identity``, ``box``
    (x1, y1, x2, y2 pixels) and the share of the box left visible."""

    frame: int
    actor: int
    identity: str
    box: tuple[float, float, float, float]
    visible: float


def _sprite(photo: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The photo's head region with a feathered elliptical alpha, and the face box in it."""
    import cv2

    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    hw, hh = 0.95 * w, 0.95 * h  # half sizes of the region: the face and some context
    ph, pw = photo.shape[:2]
    rx1, ry1 = int(max(cx - hw, 0)), int(max(cy - hh, 0))
    rx2, ry2 = int(min(cx + hw, pw)), int(min(cy + hh, ph))
    region = photo[ry1:ry2, rx1:rx2]
    rh, rw = region.shape[:2]
    alpha = np.zeros((rh, rw), np.float32)
    centre = (int(cx - rx1), int(cy - ry1))
    cv2.ellipse(alpha, centre, (int(hw * 0.92), int(hh * 0.98)), 0, 0, 360, 1.0, -1)
    k = max(3, int(0.12 * min(rw, rh)) | 1)
    alpha = cv2.GaussianBlur(alpha, (k, k), 0)
    return region, alpha, (x1 - rx1, y1 - ry1, x2 - rx1, y2 - ry1)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, seeded BGR background (low-frequency colour noise plus a gradient)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (6, 8, 3)).astype(np.uint8)
    bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0.8, 1.1, height, dtype=np.float32)[:, None, None]
    return np.clip(bg.astype(np.float32) * ramp, 0, 255).astype(np.uint8)


class Scene:
    """Renders the frames of a composed video and their ground truth.

    Args:
        actors: the people, in drawing order (a later one occludes an earlier one).
        width, height: frame size in pixels.
        fps: frames per second.
        duration: seconds.
        seed: the background's seed.
    """

    def __init__(
        self,
        actors: Sequence[Actor],
        width: int,
        height: int,
        fps: float,
        duration: float,
        seed: int = 0,
    ) -> None:
        self.actors = list(actors)
        self.width, self.height, self.fps, self.duration = width, height, fps, duration
        self.background = background(width, height, seed)
        self._sprites = [
            [_sprite(p, b) for p, b in zip(a.photos, a.boxes, strict=True)] for a in actors
        ]

    @property
    def frames(self) -> int:
        return int(round(self.duration * self.fps))

    def render(self, index: int) -> tuple[np.ndarray, list[TruthBox]]:
        """Frame ``index``: the (H, W, 3) BGR image and its ground-truth faces."""
        import cv2

        t = index / self.fps
        img = self.background.astype(np.float32)
        placed = []  # (actor, face box, x0, y0, alpha) per drawn actor
        for ai, actor in enumerate(self.actors):
            state = actor.at(t)
            if state is None:
                continue
            pi, fx, fy, fh = state
            region, alpha, fbox = self._sprites[ai][pi]
            scale = fh * self.height / max(fbox[3] - fbox[1], 1e-6)
            rw = max(1, int(round(region.shape[1] * scale)))
            rh = max(1, int(round(region.shape[0] * scale)))
            sp = cv2.resize(
                region, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            )
            al = cv2.resize(alpha, (rw, rh), interpolation=cv2.INTER_LINEAR)
            fcx, fcy = (fbox[0] + fbox[2]) / 2 * scale, (fbox[1] + fbox[3]) / 2 * scale
            x0 = int(round(fx * self.width - fcx))
            y0 = int(round(fy * self.height - fcy))
            box = (
                fbox[0] * scale + x0,
                fbox[1] * scale + y0,
                fbox[2] * scale + x0,
                fbox[3] * scale + y0,
            )
            _blend(img, sp, al, x0, y0)
            placed.append((ai, box, x0, y0, al))
        truth = []
        for k, (ai, box, *_rest) in enumerate(placed):
            vis = _visible(box, placed[k + 1 :], self.width, self.height)
            clipped = (
                max(box[0], 0.0),
                max(box[1], 0.0),
                min(box[2], float(self.width)),
                min(box[3], float(self.height)),
            )
            area = (box[2] - box[0]) * (box[3] - box[1])
            inside = (
                max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0) / max(area, 1e-9)
            )
            vis *= inside
            if vis >= VISIBLE:
                truth.append(TruthBox(index, ai, self.actors[ai].identity, clipped, float(vis)))
        return np.clip(img, 0, 255).astype(np.uint8), truth

    def __iter__(self) -> Iterator[tuple[np.ndarray, list[TruthBox]]]:
        for i in range(self.frames):
            yield self.render(i)

    def write(self, path: str | Path, crf: int = 20, preset: str = "veryfast") -> list[TruthBox]:
        """Encode the video with H.264 (libx264 through PyAV) and return its ground truth.

        Args:
            path: output file (``.mp4``, ``.mkv``, ...).
            crf: x264's constant rate factor (lower: better quality, larger file).
            preset: x264's speed preset.
        """
        from ..video.source import require_av

        av = require_av()
        truth: list[TruthBox] = []
        fps = _fraction(self.fps)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for image, boxes in self:
                truth.extend(boxes)
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return truth


def _fraction(fps: float):  # noqa: ANN202 - a fractions.Fraction
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def _blend(img: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    h, w = img.shape[:2]
    sx1, sy1 = max(0, -x0), max(0, -y0)
    dx1, dy1 = max(0, x0), max(0, y0)
    dx2, dy2 = min(w, x0 + sprite.shape[1]), min(h, y0 + sprite.shape[0])
    if dx2 <= dx1 or dy2 <= dy1:
        return
    sp = sprite[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1].astype(np.float32)
    al = alpha[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1, None]
    roi = img[dy1:dy2, dx1:dx2]
    roi *= 1.0 - al
    roi += al * sp


def _visible(box: tuple, later: list, width: int, height: int) -> float:
    """Share of ``box`` not covered by the alpha of the actors drawn after it."""
    x1, y1 = int(max(box[0], 0)), int(max(box[1], 0))
    x2, y2 = int(min(math.ceil(box[2]), width)), int(min(math.ceil(box[3]), height))
    if x2 <= x1 or y2 <= y1:
        return 0.0
    cover = np.zeros((y2 - y1, x2 - x1), np.float32)
    for _, _, ox, oy, al in later:
        ax1, ay1 = max(x1, ox), max(y1, oy)
        ax2, ay2 = min(x2, ox + al.shape[1]), min(y2, oy + al.shape[0])
        if ax2 <= ax1 or ay2 <= ay1:
            continue
        part = al[ay1 - oy : ay2 - oy, ax1 - ox : ax2 - ox]
        view = cover[ay1 - y1 : ay2 - y1, ax1 - x1 : ax2 - x1]
        np.maximum(view, part, out=view)
    return float(1.0 - cover.mean())
