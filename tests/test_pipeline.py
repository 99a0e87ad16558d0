"""The one pipeline: ``embed_many`` / ``crop_many`` against the single-image calls."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import lfw_image

from npcface import FaceRecognizer, ImageError, NoFaceError
from npcface.align import align_faces
from npcface.choose import select_face
from npcface.errors import InvalidArgumentError


def photos(lfw_dir):
    return [
        lfw_image(lfw_dir, "George_W_Bush", 1),
        lfw_image(lfw_dir, "Tony_Blair", 1),
        lfw_image(lfw_dir, "Aaron_Eckhart", 1),
        lfw_image(lfw_dir, "Tony_Blair", 2),
        lfw_image(lfw_dir, "Colin_Powell", 1),
    ]


def test_embed_many_equals_embed_and_keeps_failures_as_values(lfw_dir, recognizer):
    good = photos(lfw_dir)
    blank = np.full((200, 200, 3), 127, np.uint8)  # a valid image with no face
    inputs = [good[0], b"not an image at all", good[1], blank, *good[2:]]
    results = recognizer.embed_many(inputs, batch_size=2)
    assert [r.index for r in results] == list(range(len(inputs)))
    assert [r.kind for r in results] == ["ok", "unreadable", "ok", "no_face", "ok", "ok", "ok"]
    assert isinstance(results[1].error, ImageError) and isinstance(results[3].error, NoFaceError)
    assert results[1].embedding is None and results[3].face is None
    for r in results:
        if r.ok:
            want = recognizer.embed(inputs[r.index])
            assert r.embedding.shape == (128,) and abs(np.linalg.norm(r.embedding) - 1) < 1e-5
            assert np.abs(r.embedding - want).max() < 1e-5
            assert r.faces_found >= 1 and r.name == str(inputs[r.index])


def test_embed_many_batches_crops_across_images(lfw_dir):
    rec = FaceRecognizer()
    real = rec.embedder.embed
    batches = []

    def spy(crops, flip=False):
        batches.append(len(crops))
        return real(crops, flip=flip)

    rec.embedder.embed = spy
    timings: dict[str, float] = {}
    results = rec.embed_many(photos(lfw_dir) * 2, batch_size=4, timings=timings)
    assert all(r.ok for r in results)
    assert batches == [4, 4, 2]
    assert set(timings) == {"decode", "detect", "align", "quality", "embed"}
    assert all(v > 0 for v in timings.values())


def test_crop_many_is_detect_choose_align_without_the_recogniser(lfw_dir):
    rec = FaceRecognizer(face_policy="center")
    paths = photos(lfw_dir)
    results = rec.crop_many(paths, size=120)
    assert rec._embedder is None  # the recogniser was never loaded
    for path, r in zip(paths, results, strict=True):
        img = cv2.imread(str(path))
        face = select_face(rec.detector.detect(img), img.shape, "center")
        want = align_faces(img, face.landmarks, 120)[0]
        assert r.ok and r.crop.shape == (120, 120, 3) and r.crop.dtype == np.uint8
        assert np.array_equal(r.crop, want)


def test_aligned_arrays_pass_through_only_when_asked(lfw_dir):
    rec = FaceRecognizer()
    crop = rec.crop_many([photos(lfw_dir)[0]], size=112)[0].crop
    passed = rec.crop_many([crop], size=112)[0]
    assert passed.ok and passed.face is None and np.array_equal(passed.crop, crop)
    detected = rec.crop_many([crop], size=112, aligned_arrays=False)[0]
    # detection ran: either a face was found and aligned, or the result says none was
    assert (detected.ok and detected.face is not None) or detected.kind == "no_face"


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.embed_many([], batch_size=0),
        lambda r: r.embed_many([], policy="biggest"),
        lambda r: r.crop_many([], size=3),
        lambda r: r.crop_many([], size=112.5),
    ],
)
def test_bad_pipeline_arguments_are_typed(call, recognizer):
    with pytest.raises(InvalidArgumentError):
        call(recognizer)
