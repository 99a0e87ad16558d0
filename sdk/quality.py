"""Face quality: head pose from the five landmarks, sharpness, size, detector score, and one
overall figure in [0, 1]; the enrolment gate that refuses faces below it.

Pose comes from a weak-perspective reading of the five points. The four outer points (eyes,
mouth corners) lie roughly in one plane; the nose tip stands in front of it by about
:data:`NOSE_DEPTH` times the eye-to-mouth height. Turning the head by ``yaw`` moves the nose
tip sideways from the midline of the other four by ``depth * sin(yaw)``; nodding by ``pitch``
moves it up or down from its frontal place between eyes and mouth by ``depth * sin(pitch)``
while the eye-to-mouth height shrinks by ``cos(pitch)``.
The eye-to-mouth height does not change with yaw and shrinks by cos(pitch), so it sets
the scale (the formulas are exact for an orthographic view of that model head). ``roll`` is the angle
of the eye line. Angles are degrees: yaw > 0 when the nose points to the image's right,
pitch > 0 when the face looks up, roll > 0 when the eye line turns clockwise in the image.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, LowQualityError
from .results import Face, FaceQuality

NOSE_DEPTH = 0.55
"""Nose-tip depth in front of the eye/mouth plane, in units of the eye-to-mouth height."""

NOSE_HEIGHT = 0.495
"""Frontal nose-tip height between the eye line (0) and the mouth line (1): ArcFace template."""

SHARPNESS_SIZE = 112
"""Side of the aligned crop sharpness is measured on (crops of other sizes are resized)."""

DEFAULT_ENROLL_QUALITY = 0.25
"""Default enrolment gate (see :attr:`FaceQuality.overall` for what the figure means)."""

__all__ = ["FaceQuality", "LowQualityError", "assess", "check_enrollable", "head_pose"]

# The ramps of the overall figure live with FaceQuality (npcface.results), which reads them
# to say what lowers a face's figure; named here too, where the figure is computed.
YAW_RAMP = FaceQuality.YAW_RAMP
PITCH_RAMP = FaceQuality.PITCH_RAMP
SIZE_RAMP = FaceQuality.SIZE_RAMP
SHARPNESS_RAMP = FaceQuality.SHARPNESS_RAMP
SCORE_RAMP = FaceQuality.SCORE_RAMP


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch and roll in degrees from five landmarks (5, 2), order of
    :data:`npcface.results.LANDMARK_NAMES`.

    Raises:
        InvalidArgumentError: landmarks are not (5, 2) finite numbers.
    """
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise InvalidArgumentError(f"landmarks must be a finite (5, 2) array, got {pts.shape}")
    eye_l, eye_r, nose, mouth_l, mouth_r = pts
    dx, dy = eye_r - eye_l
    roll = math.atan2(dy, dx)
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    p = (pts - pts.mean(axis=0)) @ rot.T  # eye line horizontal
    eye_mid = (p[0] + p[1]) / 2
    mouth_mid = (p[3] + p[4]) / 2
    height = float(mouth_mid[1] - eye_mid[1])
    if height <= 1e-6:
        return 0.0, 0.0, math.degrees(roll)
    # orthographic: the height shrinks to H cos(pitch), the nose moves up by depth * sin(pitch)
    tan_pitch = (eye_mid[1] + NOSE_HEIGHT * height - p[2, 1]) / (NOSE_DEPTH * height)
    pitch = math.atan(float(tan_pitch))
    depth = NOSE_DEPTH * height / max(math.cos(pitch), 1e-6)  # in units of the true height
    mid_x = float(p[[0, 1, 3, 4], 0].mean())
    sin_yaw = (p[2, 0] - mid_x) / depth
    yaw = math.degrees(math.asin(float(np.clip(sin_yaw, -1, 1))))
    return yaw, math.degrees(pitch), math.degrees(roll)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of an aligned (S, S, 3) uint8 BGR crop, at 112 px, grey."""
    import cv2

    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise InvalidArgumentError(f"crop must be (S, S, 3), got {crop.shape}")
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if grey.shape[0] != SHARPNESS_SIZE:
        grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _fall(x: float, start: float, end: float) -> float:
    """1 below ``start``, 0 beyond ``end``, linear between."""
    return float(np.clip((end - x) / (end - start), 0.0, 1.0))


def _rise(x: float, start: float, end: float) -> float:
    """0 below ``start``, 1 beyond ``end``, linear between."""
    return float(np.clip((x - start) / (end - start), 0.0, 1.0))


def assess(face: Face, crop: np.ndarray) -> FaceQuality:
    """The quality of ``face`` given its aligned crop (any size; see :func:`sharpness`)."""
    yaw, pitch, roll = head_pose(face.landmarks)
    sharp = sharpness(crop)
    size = max(min(face.width, face.height), 0.0)
    overall = (
        _fall(abs(yaw), *YAW_RAMP)
        * _fall(abs(pitch), *PITCH_RAMP)
        * _rise(size, *SIZE_RAMP)
        * _rise(sharp, *SHARPNESS_RAMP)
        * _rise(face.score, *SCORE_RAMP)
    )
    return FaceQuality(yaw, pitch, roll, sharp, size, float(face.score), overall)


def with_quality(face: Face, crop: np.ndarray) -> Face:
    """``face`` with its :class:`FaceQuality` filled in."""
    return replace(face, quality=assess(face, crop))


def with_qualities(image: np.ndarray, faces: list[Face]) -> list[Face]:
    """Every face of ``image`` (BGR uint8) with its quality (aligned at 112 px to measure)."""
    from .align import align_faces

    if not faces:
        return []
    crops = align_faces(image, np.stack([f.landmarks for f in faces]), SHARPNESS_SIZE)
    return [with_quality(f, c) for f, c in zip(faces, crops, strict=True)]


def check_enrollable(face: Face, gate: float | None, name: str = "image") -> None:
    """Refuse a face whose overall quality is below ``gate`` (``None`` or 0: accept all).

    Raises:
        LowQualityError: the face is below the gate; the message names the image, the
            figures that lowered it and how to pass (a better photo, or a lower gate).
        InvalidArgumentError: the gate is outside [0, 1], or the face has no quality.
    """
    if not gate:
        return
    if not 0.0 <= gate <= 1.0:
        raise InvalidArgumentError(f"enrolment quality gate must be in [0, 1], got {gate}")
    q = face.quality
    if q is None:
        raise InvalidArgumentError(f"{name}: the face carries no quality to check")
    if q.overall < gate:
        why = ", ".join(q.problems()) or "low quality"
        raise LowQualityError(
            f"{name}: face quality {q.overall:.2f} is below the enrolment gate {gate:.2f} "
            f"({why}); use a sharper, larger, more frontal photo, or lower the gate "
            "(FaceRecognizer(enroll_quality=...))",
            q,
            gate,
        )


def quality_dict(face: Face | None) -> dict[str, Any] | None:
    """JSON-friendly quality of a face (None when there is none)."""
    return None if face is None or face.quality is None else face.quality.to_dict()
