"""Face quality: pose against projected 3-D points, and a real face turned, blurred, shrunk."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import lfw_image

from npcface.errors import InvalidArgumentError
from npcface.quality import (
    NOSE_DEPTH,
    NOSE_HEIGHT,
    FaceQuality,
    LowQualityError,
    check_enrollable,
    head_pose,
    sharpness,
)
from npcface.results import Face

# A frontal five-point face: eyes and mouth corners in one plane (z = 0), the nose tip in
# front of it by NOSE_DEPTH eye-to-mouth heights, NOSE_HEIGHT of the way from eyes to mouth.
H = 40.0
MODEL = np.array(
    [
        [-18.0, 0.0, 0.0],
        [18.0, 0.0, 0.0],
        [0.0, NOSE_HEIGHT * H, -NOSE_DEPTH * H],  # camera looks along +z: "in front" is -z
        [-15.0, H, 0.0],
        [15.0, H, 0.0],
    ]
)


def _project(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Orthographic image of MODEL turned by yaw (about y), pitch (about x), roll (about z)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    pts = MODEL - MODEL[[0, 1, 3, 4]].mean(axis=0)  # rotate about the face's centre
    return (pts @ (rz @ rx @ ry).T)[:, :2] + [200.0, 150.0]


@pytest.mark.parametrize("yaw", [-60, -35, -10, 0, 20, 45, 70])
def test_yaw_of_a_projected_head(yaw):
    est_yaw, est_pitch, est_roll = head_pose(_project(yaw, 0, 0))
    assert est_yaw == pytest.approx(yaw, abs=0.5)
    assert abs(est_pitch) < 0.5 and abs(est_roll) < 0.5


@pytest.mark.parametrize("pitch", [-30, -10, 15, 30])
def test_pitch_of_a_projected_head(pitch):
    est_yaw, est_pitch, _ = head_pose(_project(0, pitch, 0))
    assert abs(est_yaw) < 0.5
    assert est_pitch == pytest.approx(pitch, abs=0.5)


@pytest.mark.parametrize(("yaw", "pitch"), [(30, 20), (-45, -15)])
def test_yaw_and_pitch_together(yaw, pitch):
    # the head turns first, then nods: the eye line tilts, which couples the two a little
    est_yaw, est_pitch, _ = head_pose(_project(yaw, pitch, 0))
    assert est_yaw == pytest.approx(yaw, abs=6)
    assert est_pitch == pytest.approx(pitch, abs=6)


@pytest.mark.parametrize("roll", [-40, 15, 90])
def test_in_plane_rotation_is_roll_only(roll):
    est_yaw, est_pitch, est_roll = head_pose(_project(25, 0, roll))
    assert est_roll == pytest.approx(roll, abs=0.5)
    assert est_yaw == pytest.approx(25, abs=0.5)
    assert abs(est_pitch) < 0.5


def test_head_pose_rejects_bad_landmarks():
    with pytest.raises(InvalidArgumentError):
        head_pose(np.zeros((4, 2)))
    with pytest.raises(InvalidArgumentError):
        head_pose(np.full((5, 2), np.nan))


def test_sharpness_is_the_laplacian_variance():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float64)
    lap = (
        np.roll(grey, 1, 0) + np.roll(grey, -1, 0) + np.roll(grey, 1, 1) + np.roll(grey, -1, 1)
    ) - 4 * grey  # the 4-neighbour Laplacian; borders differ, so compare the interior
    inner = lap[1:-1, 1:-1]
    ours = cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[1:-1, 1:-1]
    np.testing.assert_allclose(ours, inner)
    assert sharpness(crop) == pytest.approx(
        cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    )


def _rotate(img: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image padded by half its size on each side and rotated; and the 2x3 matrix
    (in padded coordinates)."""
    h, w = img.shape[:2]
    big = cv2.copyMakeBorder(img, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REFLECT)
    hh, ww = big.shape[:2]
    m = cv2.getRotationMatrix2D((ww / 2, hh / 2), degrees, 1.0)
    return cv2.warpAffine(big, m, (ww, hh), flags=cv2.INTER_LINEAR), m


def test_quality_of_a_real_face_rotated_blurred_shrunk(lfw_dir, recognizer):
    img = cv2.imread(str(lfw_image(lfw_dir, "Tony_Blair", 2)))  # frontal, upright
    _, face = recognizer.represent(img)
    q = face.quality
    assert isinstance(q, FaceQuality) and q.overall > 0.7
    assert abs(q.yaw) < 20 and abs(q.roll) < 10
    assert q.size == pytest.approx(min(face.width, face.height))
    assert q.score == pytest.approx(face.score)

    # in-plane rotation (cv2 angles are anticlockwise): roll moves by the angle, yaw stays;
    # exactly for the landmarks themselves rotated, within the detector's error for the image
    rotated, m = _rotate(img, -30)
    pts = (face.landmarks + [img.shape[1] // 2, img.shape[0] // 2]) @ m[:, :2].T + m[:, 2]
    yaw_r, pitch_r, roll_r = head_pose(pts)
    assert (yaw_r, pitch_r, roll_r - q.roll) == pytest.approx((q.yaw, q.pitch, 30), abs=1e-3)
    _, turned = recognizer.represent(rotated)
    assert turned.quality.roll - q.roll == pytest.approx(30, abs=8)
    assert turned.quality.yaw == pytest.approx(q.yaw, abs=8)

    _, blurred = recognizer.represent(cv2.GaussianBlur(img, (0, 0), 3))
    assert blurred.quality.sharpness < 0.3 * q.sharpness
    assert blurred.quality.overall < q.overall

    small = cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    _, shrunk = recognizer.represent(small)
    assert shrunk.quality.size == pytest.approx(q.size / 4, rel=0.2)
    assert shrunk.quality.overall < 0.5 * q.overall


def test_detect_and_verify_report_quality(lfw_dir, recognizer):
    a, b = lfw_image(lfw_dir, "Tony_Blair", 1), lfw_image(lfw_dir, "Tony_Blair", 2)
    assert all(isinstance(f.quality, FaceQuality) for f in recognizer.detect(a))
    r = recognizer.verify(a, b)
    assert isinstance(r.face1.quality, FaceQuality) and isinstance(r.face2.quality, FaceQuality)
    assert set(r.to_dict()["face1"]["quality"]) >= {"yaw", "pitch", "roll", "overall"}


def _face_with(overall: float) -> Face:
    q = FaceQuality(50.0, 0.0, 0.0, 10.0, 20.0, 0.9, overall)
    return Face(np.array([0, 0, 20, 20], np.float32), np.zeros((5, 2), np.float32), 0.9, q)


def test_enrolment_gate_function():
    check_enrollable(_face_with(0.5), 0.5)  # at the gate: accepted
    check_enrollable(_face_with(0.0), 0.0)  # gate 0: all accepted
    check_enrollable(_face_with(0.0), None)
    with pytest.raises(LowQualityError, match=r"x\.jpg.*0\.10.*below.*0\.50.*turned") as err:
        check_enrollable(_face_with(0.1), 0.5, "x.jpg")
    assert err.value.quality.overall == 0.1 and err.value.gate == 0.5
    with pytest.raises(InvalidArgumentError):
        check_enrollable(_face_with(0.9), 1.5)
