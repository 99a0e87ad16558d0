"""Result types. Frozen dataclasses with documented units and orders.

Coordinates are pixels in the original image. Colour order inside npcface is BGR uint8
(OpenCV's); conversion to a model's colour order happens in the embedder only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
"""Order of the five landmarks, as seen in the image (left = smaller x for an upright face)."""


@dataclass(frozen=True)
class FaceQuality:
    """How usable a face is for recognition.

    Attributes:
        yaw, pitch, roll: estimated head pose in degrees (see :mod:`npcface.quality` for signs);
            yaw and pitch saturate at +-90.
        sharpness: variance of the Laplacian of the aligned crop in grey levels, at
            :data:`npcface.quality.SHARPNESS_SIZE` px (blur and upscaled small faces lower it; a sharp
            frontal face is typically 150 to 1,500).
        size: short side of the face box in pixels of the original image.
        score: the detector's confidence in [0, 1].
        overall: product of four factors in [0, 1] (pose, size, sharpness, detector score),
            each a linear ramp between the limits of this class's ``*_RAMP`` (e.g. yaw 30 to 75 degrees).
            It predicts whether a genuine comparison passes the threshold: on the
            CelebA pose benchmark (``npcface eval make-pose``; 872 genuine frontal-to-turned
            pairs, accurate preset, threshold 0.3633, ``bench/quality_vs_pass.py``),
            pairs whose lower
            quality is below 0.25 passed 61.7 %, 0.25-0.5 83.3 %, 0.5-0.75 86.6 %, 0.75-1
            89.7 %. 1 means nothing in the face is known to hurt recognition; 0 that at
            least one factor is beyond its limit (profile view, tiny, heavily blurred or a
            doubtful detection).
    """

    YAW_RAMP: ClassVar[tuple[float, float]] = (30.0, 75.0)
    """Where the pose factor starts to fall and where it is 0 (degrees), as for pitch."""
    PITCH_RAMP: ClassVar[tuple[float, float]] = (25.0, 60.0)
    SIZE_RAMP: ClassVar[tuple[float, float]] = (16.0, 48.0)
    """Face box short side in pixels: 0 at 16, 1 from 48."""
    SHARPNESS_RAMP: ClassVar[tuple[float, float]] = (20.0, 120.0)
    """Laplacian variance of the 112 px grey crop: 0 at 20, 1 from 120."""
    SCORE_RAMP: ClassVar[tuple[float, float]] = (0.5, 0.8)

    yaw: float
    pitch: float
    roll: float
    sharpness: float
    size: float
    score: float
    overall: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}

    def problems(self) -> list[str]:
        """What lowers the overall figure, in words (empty for a perfect face)."""
        out = []
        if max(abs(self.yaw) - self.YAW_RAMP[0], 0) > 0:
            out.append(f"turned (yaw {self.yaw:.0f} degrees)")
        if max(abs(self.pitch) - self.PITCH_RAMP[0], 0) > 0:
            out.append(f"tilted (pitch {self.pitch:.0f} degrees)")
        if self.size < self.SIZE_RAMP[1]:
            out.append(f"small ({self.size:.0f} px)")
        if self.sharpness < self.SHARPNESS_RAMP[1]:
            out.append(f"blurred (sharpness {self.sharpness:.0f})")
        if self.score < self.SCORE_RAMP[1]:
            out.append(f"doubtful detection (score {self.score:.2f})")
        return out


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (x1, y1, x2, y2) float32 pixels in the original image, clipped to it
            (0 <= x1 <= x2 <= width, 0 <= y1 <= y2 <= height), so
            ``img[int(y1):int(y2), int(x1):int(x2)]`` is the visible face even when the
            border cuts it.
        landmarks: (5, 2) float32 pixels, order :data:`LANDMARK_NAMES`; not clipped: for a
            face cut by the border they may lie outside the image, where alignment needs them.
        score: detector confidence in [0, 1].
        quality: pose, sharpness, size and an overall figure (see
            :class:`FaceQuality`); filled in by :class:`FaceRecognizer`,
            ``None`` straight from a detector.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    quality: FaceQuality | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
            "quality": self.quality.to_dict() if self.quality is not None else None,
        }


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 verification.

    Attributes:
        verified: ``similarity >= threshold``.
        similarity: cosine similarity of the two embeddings, in [-1, 1]; higher is more alike.
        threshold: the decision threshold that was applied.
        face1, face2: the faces that were compared, each with its ``quality`` (``None``
            when an embedding was given).
        model: name of the recogniser that produced the embeddings.
    """

    verified: bool
    similarity: float
    threshold: float
    face1: Face | None
    face2: Face | None
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "similarity": round(self.similarity, 6),
            "threshold": round(self.threshold, 6),
            "face1": self.face1.to_dict() if self.face1 else None,
            "face2": self.face2.to_dict() if self.face2 else None,
            "model": self.model,
        }


@dataclass(frozen=True)
class Match:
    """One gallery match: an identity and how similar the query is to its best template."""

    identity: str
    similarity: float
    template_id: int
    metadata: dict[str, Any] | None = field(default=None)


def failure_kind(error: BaseException | None) -> str:
    """How a per-image failure is reported: ``ok``, ``unreadable``, ``no_face``,
    ``multiple_faces``, ``low_quality`` or ``error``."""
    from .errors import ImageError, LowQualityError, MultipleFacesError, NoFaceError

    if error is None:
        return "ok"
    if isinstance(error, LowQualityError):
        return "low_quality"
    if isinstance(error, ImageError):
        return "unreadable"
    if isinstance(error, NoFaceError):
        return "no_face"
    if isinstance(error, MultipleFacesError):
        return "multiple_faces"
    return "error"


class _PerImage:
    """What the per-image results of the batched pipeline share: success, or a failure kind."""

    error: Exception | None

    @property
    def ok(self) -> bool:
        """True when the image gave a result (``error`` is None)."""
        return self.error is None

    @property
    def kind(self) -> str:
        """``ok``, ``unreadable``, ``no_face``, ``multiple_faces`` or ``error``."""
        return failure_kind(self.error)


@dataclass(frozen=True)
class CropResult(_PerImage):
    """The aligned crop of the face chosen in one image (one entry of ``crop_many``).

    Attributes:
        index: position of the image in the input sequence.
        name: the image's name (path, or a description of the input).
        face: the chosen face, or None when the image failed.
        crop: (S, S, 3) uint8 BGR aligned crop, or None when the image failed.
        error: why the image gave no crop (an :class:`~npcface.NpcfaceError`), or None.
        faces_found: faces the detector found in the image (0 for a pre-aligned crop).
    """

    index: int
    name: str
    face: Face | None
    crop: np.ndarray | None
    error: Exception | None = None
    faces_found: int = 0


@dataclass(frozen=True)
class EmbedResult(_PerImage):
    """The embedding of the face chosen in one image (one entry of ``embed_many``).

    Attributes:
        index: position of the image in the input sequence.
        name: the image's name (path, or a description of the input).
        face: the chosen face, or None when the image failed.
        embedding: (d,) float32 unit vector, or None when the image failed.
        error: why the image gave no embedding (an :class:`~npcface.NpcfaceError`), or None.
        faces_found: faces the detector found in the image (0 for a pre-aligned crop).
    """

    index: int
    name: str
    face: Face | None
    embedding: np.ndarray | None
    error: Exception | None = None
    faces_found: int = 0
