"""Alignment against independent computations: known transforms and complex least squares."""

import cv2
import numpy as np
import pytest

from npcface.align import align_faces, reference_landmarks, similarity_transforms


def _similarity(scale, angle, tx, ty):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def _complex_least_squares(src, dst):
    """Independent closed form: dst ~ a * src + b over complex numbers (a = s e^{i theta})."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    zs_c, zd_c = zs - zs.mean(), zd - zd.mean()
    a = (zd_c * np.conj(zs_c)).sum() / (np.abs(zs_c) ** 2).sum()
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


@pytest.mark.parametrize(
    "scale,angle,tx,ty", [(1.0, 0.0, 0, 0), (2.7, 0.4, 30, -12), (0.3, -2.5, 100, 80)]
)
def test_recovers_a_known_similarity_transform(scale, angle, tx, ty):
    template = reference_landmarks(112)
    known = _similarity(scale, angle, tx, ty)
    src = _apply(known, template)  # landmarks as they would appear in an image
    m = similarity_transforms(src, template)  # should be the inverse of `known`
    inv = cv2.invertAffineTransform(known)
    np.testing.assert_allclose(m, inv, atol=1e-9)


def test_noisy_points_match_complex_least_squares():
    rng = np.random.default_rng(0)
    dst = reference_landmarks(120)
    src = rng.uniform(0, 300, size=(50, 5, 2))
    mats = similarity_transforms(src, dst)
    for m, s in zip(mats, src, strict=True):
        np.testing.assert_allclose(m, _complex_least_squares(s, dst), atol=1e-8)


def test_never_reflects():
    dst = reference_landmarks(112)
    mirrored = dst.copy()
    mirrored[:, 0] = -mirrored[:, 0]
    m = similarity_transforms(mirrored, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_scales_with_crop_size():
    np.testing.assert_allclose(reference_landmarks(120), reference_landmarks(112) * 120 / 112)
    with pytest.raises(ValueError):
        reference_landmarks(0)


def test_align_faces_puts_landmarks_on_the_template():
    # Draw five dots, transform the image, align: the dots must land on the template.
    size = 120
    template = reference_landmarks(size)
    known = _similarity(2.0, 0.3, 60, 40)
    img = np.zeros((400, 400, 3), np.uint8)
    pts = _apply(known, template)
    for x, y in pts:
        cv2.circle(img, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align_faces(img, pts, size)
    assert crop.shape == (1, size, size, 3) and crop.dtype == np.uint8
    for x, y in template:
        xi, yi = round(x), round(y)
        assert crop[0, yi, xi].max() > 200, (x, y)
    # batch: two faces in one call give the same crop as one at a time
    both = align_faces(img, np.stack([pts, pts]), size)
    np.testing.assert_array_equal(both[0], crop[0])
    np.testing.assert_array_equal(both[1], crop[0])
