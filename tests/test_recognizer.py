"""The facade on real faces: verify, embed, face policies, thresholds, typed errors."""

import numpy as np
import pytest
from conftest import lfw_image

from npcface import (
    Face,
    FaceRecognizer,
    MultipleFacesError,
    NoFaceError,
    NpcfaceError,
    VerifyResult,
    cosine_similarity,
)
from npcface.choose import select_face


def test_same_and_different_people(lfw_dir, recognizer):
    a1, a2 = lfw_image(lfw_dir, "George_W_Bush", 1), lfw_image(lfw_dir, "George_W_Bush", 2)
    b = lfw_image(lfw_dir, "Aaron_Eckhart", 1)
    same = recognizer.verify(a1, a2)
    diff = recognizer.verify(a1, b)
    assert isinstance(same, VerifyResult) and same.model == "sface"
    assert same.verified and not diff.verified
    assert same.similarity > same.threshold > diff.similarity
    assert isinstance(same.face1, Face) and same.face1.landmarks.shape == (5, 2)


def test_embedding_is_unit_norm_and_matches_cosine(lfw_dir, recognizer):
    e1 = recognizer.embed(lfw_image(lfw_dir, "Tony_Blair", 1))
    e2 = recognizer.embed(lfw_image(lfw_dir, "Tony_Blair", 2))
    assert e1.shape == (128,) and e1.dtype == np.float32
    assert abs(np.linalg.norm(e1) - 1) < 1e-5
    r = recognizer.verify(e1, e2)
    assert r.face1 is None and abs(r.similarity - float(e1 @ e2)) < 1e-6
    assert abs(recognizer.compare(e1, e2) - float(e1 @ e2)) < 1e-6


def test_an_aligned_crop_is_embedded_directly(lfw_dir, recognizer):
    img = lfw_image(lfw_dir, "Tony_Blair", 1)
    emb, face = recognizer.represent(img)
    crop = recognizer.align(img, face)[0]
    assert crop.shape == (112, 112, 3)
    np.testing.assert_allclose(recognizer.embed(crop), emb, atol=1e-5)


def test_flip_fusion_is_the_normalised_sum(lfw_dir, recognizer):
    img = lfw_image(lfw_dir, "Tony_Blair", 3)
    _, face = recognizer.represent(img)
    crop = recognizer.align(img, face)
    plain = recognizer.embedder.embed(crop)
    mirrored = recognizer.embedder.embed(crop[:, :, ::-1].copy())
    fused = recognizer.embedder.embed(crop, flip=True)
    expected = (plain + mirrored) / np.linalg.norm(plain + mirrored)
    np.testing.assert_allclose(fused, expected, atol=1e-5)


def test_no_face_names_the_input(tmp_path, recognizer):
    blank = np.full((240, 320, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match="array uint8"):
        recognizer.verify(blank, blank)


def test_far_threshold_choice(recognizer):
    info = recognizer.info
    assert recognizer.default_threshold() == info.thresholds["default"]
    fars = [k for k in info.thresholds if k.startswith("far=")]
    for key in fars:
        assert recognizer.default_threshold(float(key[4:])) == info.thresholds[key]
    with pytest.raises(NpcfaceError, match="no threshold calibrated"):
        recognizer.default_threshold(far=0.123456)
    # stricter FAR, higher threshold
    values = [info.thresholds[k] for k in sorted(fars, key=lambda k: -float(k[4:]))]
    assert values == sorted(values)


def _face(x1, y1, x2, y2, score=0.9):
    return Face(np.array([x1, y1, x2, y2], np.float32), np.zeros((5, 2), np.float32), score)


def test_face_policies():
    big_corner = _face(0, 0, 100, 100, 0.8)
    centre = _face(120, 120, 200, 200, 0.85)
    tiny_centre = _face(155, 155, 165, 165, 0.99)
    faces = [big_corner, centre, tiny_centre]
    shape = (320, 320, 3)
    assert select_face(faces, shape, "largest") is big_corner
    assert select_face(faces, shape, "center") is centre  # tiny one is under 1/4 the area
    assert select_face(faces, shape, "best_score") is tiny_centre
    with pytest.raises(MultipleFacesError, match="3 faces"):
        select_face(faces, shape, "single", "x.jpg")
    assert select_face([centre], shape, "single") is centre
    with pytest.raises(NoFaceError, match="x.jpg"):
        select_face([], shape, "largest", "x.jpg")
    with pytest.raises(ValueError):
        FaceRecognizer(face_policy="biggest")


def test_cosine_similarity_rows():
    a = np.array([[1, 0], [0, 2]], np.float32)
    b = np.array([[1, 1], [0, -1]], np.float32)
    np.testing.assert_allclose(cosine_similarity(a, b), [1 / np.sqrt(2), -1.0], atol=1e-6)
    with pytest.raises(ValueError):
        cosine_similarity(a, b[:1])


def test_nothing_heavy_at_import():
    import subprocess
    import sys

    code = "import npcface, sys; print(any(m in sys.modules for m in ('torch', 'faiss', 'onnxruntime')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
