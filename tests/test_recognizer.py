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
    centre = _face(110, 110, 190, 190, 0.85)  # its centre (150, 150) is 14 px off the image's
    tiny_centre = _face(155, 155, 165, 165, 0.99)  # right on the image's centre (160, 160)
    faces = [big_corner, centre, tiny_centre]
    shape = (320, 320, 3)
    assert select_face(faces, shape, "largest") is big_corner
    # the tiny face is nearer the centre, but under a quarter of the largest's area
    assert select_face(faces, shape, "center") is centre
    # at just over a quarter (52 x 52 > 100 x 100 / 4) it is the photo's subject
    quarter = _face(134, 134, 186, 186, 0.9)
    assert select_face([big_corner, centre, quarter], shape, "center") is quarter
    under = _face(136, 136, 184, 184, 0.9)  # 48 x 48 < 2500
    assert (
        select_face([big_corner, under, _face(60, 60, 140, 140, 0.9)], shape, "center") is not under
    )
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


def test_the_cosine_of_a_vector_with_itself_is_at_most_one(tmp_path):
    """float32 rounding made it 1.0000001 for this vector, and arccos of that is NaN; the
    library's similarity and a cosine gallery's both stay in [-1, 1]."""
    import math

    from npcface import Gallery

    a = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    raw = float((a * a).sum() / (np.linalg.norm(a) * np.linalg.norm(a)))
    assert raw > 1.0  # the case itself
    sim = cosine_similarity(a, a)
    assert sim == 1.0 and not math.isnan(math.acos(sim))
    with Gallery.create(tmp_path / "g", 128) as g:
        g.add("a", a)
        assert g.search(a, k=1)[0][0].similarity <= 1.0


def test_one_identify_contract(recognizer, lfw_dir, tmp_path):
    """identify is open set by default (the calibrated default threshold, as verify), takes
    threshold or far, never both; verify refuses both too instead of ignoring far."""
    from conftest import lfw_image

    from npcface import Gallery
    from npcface.errors import InvalidArgumentError

    with Gallery.create(tmp_path / "g", recognizer.info.embedding_size) as g:
        recognizer.enroll(g, "aaron", lfw_image(lfw_dir, "Aaron_Peirsol", 1))
        recognizer.enroll(g, "abel", lfw_image(lfw_dir, "Abel_Pacheco", 1))
        stranger = lfw_image(lfw_dir, "AJ_Cook", 1)
        sims = {m.identity: m.similarity for m in g.search(recognizer.embed(stranger), k=2)[0]}
        default = recognizer.default_threshold()
        assert recognizer.identify(g, stranger) == [
            m for m in g.search(recognizer.embed(stranger), k=2)[0] if m.similarity >= default
        ]
        assert all(s < default for s in sims.values())  # so: nobody
        assert [m.identity for m in recognizer.identify(g, stranger, threshold=-1)] == sorted(
            sims, key=sims.get, reverse=True
        )
        probe = lfw_image(lfw_dir, "Aaron_Peirsol", 2)
        assert [m.identity for m in recognizer.identify(g, probe, far=1e-3)] == ["aaron"]
        with pytest.raises(InvalidArgumentError, match="not both"):
            recognizer.identify(g, probe, threshold=0.3, far=1e-3)
        with pytest.raises(InvalidArgumentError, match="not both"):
            recognizer.verify(probe, stranger, threshold=0.3, far=1e-3)


def test_prefetch_detector_builds_it_beside_the_recogniser(lfw_dir):
    """The CLI builds the detector in a thread while it builds the recogniser: both end up
    built once, and answers are those of a recogniser built in order; a detector that cannot
    be built raises at its first use, not in the thread."""
    from npcface import FaceRecognizer

    a1, a2 = lfw_image(lfw_dir, "Colin_Powell", 1), lfw_image(lfw_dir, "Colin_Powell", 2)
    rec = FaceRecognizer(preset="fast")
    thread = rec.prefetch_detector()
    assert rec.info.name == "sface-int8"  # the recogniser, meanwhile
    thread.join(timeout=300)
    detector = rec.detector
    assert not thread.is_alive() and detector is rec.detector
    ordered = FaceRecognizer(preset="fast")
    assert rec.verify(a1, a2).similarity == pytest.approx(ordered.verify(a1, a2).similarity)
    # a detector that fails to build (here: an option it does not take) raises at its first
    # use, not in the thread
    broken = FaceRecognizer(preset="fast", detector_options={"no_such_option": 1})
    broken.prefetch_detector().join(timeout=60)
    with pytest.raises(TypeError, match="no_such_option"):
        broken.detect(a1)


def test_an_unknown_pipeline_name_is_refused_at_construction():
    """Reported: FaceRecognizer(detector="scrfd") constructed and failed only at first use;
    every name and number of the pipeline is checked when the recogniser is made."""
    from npcface import FaceRecognizer
    from npcface.config import RecognizerConfig
    from npcface.errors import InvalidArgumentError, UnknownNameError

    with pytest.raises(UnknownNameError, match="scrfd"):
        FaceRecognizer(detector="scrfd")
    for bad in (
        {"recognizer": "no-such-model"},
        {"face_policy": "biggest"},
        {"backend": "cuda"},
        {"threads": 0},
        {"enroll_quality": 7},
        {"preset": "turbo"},
    ):
        with pytest.raises(InvalidArgumentError):
            FaceRecognizer(**bad)
        with pytest.raises(InvalidArgumentError):
            RecognizerConfig(**bad)
    rec = FaceRecognizer(preset="fast", flip=True)
    assert rec.config == RecognizerConfig(preset="fast", flip=True).resolved()
    assert rec.config.detector == "yunet" and rec.config.flip is True
    again = FaceRecognizer.from_config(RecognizerConfig.from_dict(rec.config.to_dict()))
    assert again.config == rec.config
