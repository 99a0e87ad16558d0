"""Issue 13: inputs users of face tools hit (large photos, odd suffixes, HEIC, bad
thresholds, embeddings given to verify, faces cut by the border, many photo sizes, damaged
cached models). Each test builds its minimal input itself."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import lfw_image

from npcface.errors import (
    EmbeddingError,
    GalleryError,
    ImageError,
    InvalidArgumentError,
    ModelError,
)
from npcface.image import load_image

REPO = Path(__file__).resolve().parents[1]


def _jpeg(arr_rgb: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr_rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    """A smooth colour image: lossy codecs reproduce it closely."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack(
        [255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], axis=2
    ).astype(np.uint8)


# --- 2. one pixel limit, ours; small faces in large photos ---------------------------------
def test_max_pixels_admits_a_108_megapixel_photo() -> None:
    from npcface import FaceRecognizer

    rgb = np.zeros((9000, 12000, 3), np.uint8)
    rgb[::40, :, 1] = 200  # cheap to encode, still a real 12000 x 9000 JPEG
    data = _jpeg(rgb, quality=70)
    del rgb
    with pytest.raises(ImageError, match=r"12000x9000 = 108,000,000 pixels exceeds the limit"):
        load_image(data)  # default limit: refused with our message, not Pillow's
    img = FaceRecognizer(max_pixels=150_000_000).load(data)
    assert img.shape == (9000, 12000, 3)
    assert img[40, 5, 1] > 150 and img[20, 5, 1] < 50  # the stripes, in BGR


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fast", "accurate"])
def test_small_face_in_a_large_photo_gets_a_second_look(lfw_dir: Path, preset: str) -> None:
    """A ~95 px LFW face pasted into an 8000 x 6000 photo is found (YuNet at 0.16x;
    RetinaFace, which misses a 15 px face there, in tiles at 0.32x); its embedding must
    match the same face detected at native size (similarity to another photo of the same
    person within a few hundredths, on average), not the coarse landmarks' one."""
    from npcface import FaceRecognizer

    recognizer = FaceRecognizer(preset=preset)
    names = sorted(p.name for p in (lfw_dir / "images").iterdir() if p.is_dir())
    names = [n for n in names if lfw_image(lfw_dir, n, 2).is_file()][:16:2]
    canvas = np.full((6000, 8000, 3), 128, np.uint8)
    y, x = 2900, 3900
    diffs = []
    for name in names:
        a = load_image(lfw_image(lfw_dir, name, 1))
        ref, face = recognizer.represent(a)
        other = recognizer.embed(lfw_image(lfw_dir, name, 2))
        canvas[y : y + a.shape[0], x : x + a.shape[1]] = a
        emb, big_face = recognizer.represent(canvas)
        assert abs(big_face.box[0] - x - face.box[0]) < 0.2 * face.width  # the same face
        diffs.append(abs(float(emb @ other) - float(ref @ other)))
    assert len(diffs) == 8
    assert np.mean(diffs) < 0.03, diffs
    assert len(recognizer.detect(canvas)) == 1  # on a tile seam (x 3,500 to 4,000): found once


# --- 3. every file of an identity folder is enrolled or reported ---------------------------
def test_bulk_enrolment_lists_every_file(tmp_path: Path) -> None:
    from PIL import Image
    from test_gallery_enroll import DIM, FakeRecognizer

    from npcface.enroll import enroll_images, list_images
    from npcface.gallery import Gallery

    alice = tmp_path / "faces" / "Alice"
    alice.mkdir(parents=True)
    rng = np.random.default_rng(5)

    def picture() -> Image.Image:
        small = rng.integers(40, 255, (6, 6, 3)).astype(np.uint8)
        return Image.fromarray(cv2.resize(small, (64, 64), interpolation=cv2.INTER_NEAREST))

    picture().save(alice / "a.jpg", "JPEG")
    picture().save(alice / "b.JPG", "JPEG")
    picture().save(alice / "c.jfif", "JPEG")
    picture().save(alice / "d.gif", "GIF")
    try:
        import pillow_heif

        pillow_heif.from_pillow(picture()).save(str(alice / "IMG_0005.HEIC"), quality=90)
        heif = True
    except ImportError:  # the HEIC file is then reported with the extra to install
        (alice / "IMG_0005.HEIC").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
        heif = False
    (alice / "notes.txt").write_text("not a photo")
    (alice / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (alice / "._a.jpg").write_bytes(b"\0\5\26\7")  # macOS resource fork

    items = list_images(tmp_path / "faces")
    assert sorted(Path(i.path).name for i in items) == [
        "IMG_0005.HEIC", "a.jpg", "b.JPG", "c.jfif", "d.gif", "notes.txt"
    ]  # fmt: skip
    g = Gallery.create(tmp_path / "g", DIM, model="fake")
    summary = enroll_images(g, FakeRecognizer(), items, workers=0, progress=False)
    with open(summary.report, newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    assert summary.total == 6
    assert summary.enrolled + summary.failed + summary.skipped == 6
    assert "not an image" in rows["notes.txt"]["reason"]
    if heif:
        assert (summary.enrolled, summary.failed) == (5, 1)
    else:
        assert (summary.enrolled, summary.failed) == (4, 2)
        assert "npcface[heif]" in rows["IMG_0005.HEIC"]["reason"]
    from npcface.image import IMAGE_SUFFIXES

    assert {".jfif", ".gif", ".heic", ".avif"} <= IMAGE_SUFFIXES
    g.close()


def test_bulk_enrolment_applies_the_recognizers_pixel_limit(tmp_path: Path) -> None:
    from test_gallery_enroll import DIM, FakeRecognizer

    from npcface.enroll import enroll_images, list_images
    from npcface.gallery import Gallery

    (tmp_path / "faces" / "Bob").mkdir(parents=True)
    for name, side in (("small.png", 90), ("large.png", 120)):
        cv2.imwrite(str(tmp_path / "faces" / "Bob" / name), np.full((side, side, 3), 99, np.uint8))
    rec = FakeRecognizer()
    rec.max_pixels = 10_000  # 90 x 90 fits, 120 x 120 does not
    g = Gallery.create(tmp_path / "g", DIM, model="fake")
    for workers in (0, 1):
        s = enroll_images(g, rec, list_images(tmp_path / "faces"), workers=workers, progress=False)
        with open(s.report, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [Path(r["path"]).name for r in rows] == ["large.png"]
        assert "exceeds the limit of 10,000" in rows[0]["reason"]
    g.close()


# --- 4. HEIC / HEIF / AVIF ---------------------------------------------------------------
def test_heic_photos_decode() -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (npcface[heif]) absent")
    from PIL import Image

    rgb = _smooth_rgb(96, 128)
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, quality=95)
    img = load_image(buf.getvalue())
    assert img.shape == (96, 128, 3)
    assert np.abs(img[:, :, ::-1].astype(int) - rgb).mean() < 4


def test_avif_photos_decode() -> None:
    from PIL import Image, features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec (Pillow >= 11.2 wheels have one)")
    rgb = _smooth_rgb(96, 128)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "AVIF", quality=95)
    img = load_image(buf.getvalue())
    assert img.shape == (96, 128, 3)
    assert np.abs(img[:, :, ::-1].astype(int) - rgb).mean() < 4


def test_heic_without_pillow_heif_names_the_format_and_the_extra(tmp_path: Path) -> None:
    """A real import failure: pillow_heif blocked in sys.modules of a fresh interpreter."""
    photo = tmp_path / "IMG_0005.HEIC"
    photo.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200))
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from npcface.image import load_image\n"
        f"load_image({str(photo)!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImageError" in out.stderr
    assert "HEIC/HEIF" in out.stderr and "pip install 'npcface[heif]'" in out.stderr


# --- 5. thresholds are cosines -----------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 60, -5, 1.0001, "high"])
def test_thresholds_outside_the_cosine_range_are_refused(recognizer, bad) -> None:
    e = np.ones(128, np.float32)
    with pytest.raises(InvalidArgumentError, match="cosine similarity"):
        recognizer.verify(e, e, threshold=bad)


def test_gallery_thresholds_are_checked(tmp_path: Path) -> None:
    from npcface.gallery import Gallery

    g = Gallery.create(tmp_path / "g", 4)
    g.add("a", np.array([1.0, 0, 0, 0]))
    for bad in (float("nan"), 60, -5):
        with pytest.raises(InvalidArgumentError, match="higher is stricter"):
            g.identify(np.array([1.0, 0, 0, 0]), threshold=bad)
    assert g.identify(np.array([1.0, 0, 0, 0]), threshold=0.99).identity == "a"
    g.close()


def test_cli_verify_refuses_a_nan_threshold(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "npcface.cli", "verify", "a.jpg", "b.jpg", "--threshold", "nan"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert "cosine similarity" in out.stderr and "higher is stricter" in out.stderr


# --- 6. embeddings given to verify and compare ---------------------------------------------
def test_verify_takes_rows_of_embed_crops_and_refuses_unusable_embeddings(recognizer) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)).astype(np.uint8)
    rows = recognizer.embed_crops(crops)
    assert rows.shape == (2, 128)
    r = recognizer.verify(rows[:1], rows[1:], threshold=0.3)
    a, b = rows[0].astype(np.float64), rows[1].astype(np.float64)
    expected = a @ b / math.sqrt((a @ a) * (b @ b))
    assert abs(r.similarity - expected) < 1e-5
    assert r.verified == (expected >= 0.3) and r.face1 is None
    json.loads(json.dumps(r.to_dict(), allow_nan=False))
    bad_inputs = [
        np.zeros(128, np.float32),
        np.full((1, 128), np.nan, np.float32),
        np.ones(127, np.float32),  # another model's size
    ]
    for bad in bad_inputs:
        with pytest.raises(EmbeddingError):
            recognizer.verify(rows[0], bad, threshold=0.3)
    for bad in bad_inputs[:2]:
        with pytest.raises(EmbeddingError):
            recognizer.compare(rows[0] if bad.ndim == 1 else rows[:1], bad)


def test_the_gallery_applies_the_same_embedding_rule(tmp_path: Path) -> None:
    from npcface.gallery import Gallery

    g = Gallery.create(tmp_path / "g", 4)
    for bad, words in ((np.zeros(4), "all-zero"), (np.array([1, np.inf, 0, 0]), "NaN or infinite")):
        with pytest.raises(GalleryError, match=words):
            g.add("a", bad)
        with pytest.raises(EmbeddingError, match=words):
            from npcface.validate import check_embeddings

            check_embeddings(bad)
    g.close()


# --- 7. boxes are clipped to the image, landmarks are not ----------------------------------
def test_boxes_are_clipped_and_landmarks_kept() -> None:
    from npcface.detect.base import to_faces

    box = np.array([[-6.9, -3.3, 66.1, 84.0]], np.float32)
    marks = np.array([[[-2.0, 20], [30, 21], [12, 40], [1, 60], [28, 61]]], np.float32)
    face = to_faces(box, marks, np.array([0.9]), image_size=(145, 145))[0]
    np.testing.assert_allclose(face.box, [0.0, 0.0, 66.1, 84.0], atol=1e-5)
    np.testing.assert_array_equal(face.landmarks, marks[0])
    far = to_faces(np.array([[100, 120, 160, 170]], np.float32), marks, np.array([0.9]), (145, 145))
    np.testing.assert_allclose(far[0].box, [100, 120, 145, 145])


def test_a_face_cut_by_the_border_has_a_box_inside_the_image(lfw_dir: Path, recognizer) -> None:
    """The face spans x 99..191, y 65..193 of the photo; cutting at x 125 and y 105 leaves
    its right-bottom part, so its box must start at the image's corner."""
    img = load_image(lfw_image(lfw_dir, "Tony_Blair", 1))[105:250, 125:250]  # 145 x 125
    faces = recognizer.detect(img)
    assert faces
    x1, y1, x2, y2 = faces[0].box
    assert x1 == 0 and y1 == 0 and 40 < x2 <= 125 and 40 < y2 <= 145
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= 125 and 0 <= y1 < y2 <= 145
        assert img[int(y1) : int(y2), int(x1) : int(x2)].size > 0


# --- 8. memory does not grow with the number of photo sizes --------------------------------
def test_anchor_caches_are_bounded_and_right(recognizer) -> None:
    from npcface.detect import get_detector, retinaface, yunet

    # each detector's own cache, filled through its own detect() (the shared recogniser's
    # detector is RetinaFace: it never touches YuNet's grid cache)
    for det, cache, size in (
        (get_detector("yunet"), yunet._grid, yunet.GRID_CACHE_SIZE),
        (recognizer.detector, retinaface._priors, retinaface.PRIOR_CACHE_SIZE),
    ):
        cache.cache_clear()
        for i in range(3 * size):
            det.detect(np.full((64 + 32 * i, 96, 3), 90, np.uint8))
        info = cache.cache_info()
        assert info.currsize == size and info.misses >= 3 * size, info  # used, and bounded
    det = recognizer.detector
    # brute force: anchor k of stride s sits at column k % cols, row k // cols
    for (cx, cy), s in zip(yunet._grid(96, 160), yunet.STRIDES, strict=True):
        cols = 160 // s
        k = np.arange(len(cx))
        np.testing.assert_array_equal(cx, k % cols)
        np.testing.assert_array_equal(cy, k // cols)
    # ONNX Runtime would keep a memory pattern per input size: off where the size varies
    assert not det.runner.session.get_session_options().enable_mem_pattern
    assert recognizer.embedder.runner.backend != "onnxruntime" or (
        recognizer.embedder.runner.session.get_session_options().enable_mem_pattern
    )
    p = retinaface._priors(64, 32)
    assert p.shape == ((8 * 4 + 4 * 2 + 2 * 1) * 2, 4) and not p.flags.writeable
    np.testing.assert_allclose(p[0], [4 / 32, 4 / 64, 16 / 32, 16 / 64])


# --- 9. cached files are checked against the hash recorded when written ----------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_prepared_models_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from npcface.models import resolve_model_file

    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path / "home"))
    path = resolve_model_file("sface")
    good = _sha(path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = b"\xff" * 400  # 400 bytes flipped inside the weights
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="npcface.models"):
        assert resolve_model_file("sface") == path
    assert _sha(path) == good
    assert "rebuilding" in caplog.text
    path.write_bytes(path.read_bytes()[: len(data) // 3])  # truncated
    assert resolve_model_file("sface") == path and _sha(path) == good


def test_a_damaged_model_gives_an_error_not_a_score(tmp_path: Path) -> None:
    from npcface.embed import Embedder, embed_crops
    from npcface.models import get_model_spec, resolve_model_file

    damaged = tmp_path / "sface.onnx"
    data = bytearray(resolve_model_file("sface").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = b"\xff" * 400
    damaged.write_bytes(bytes(data))
    emb = Embedder(damaged, info=get_model_spec("sface").info, backend="onnxruntime")
    crops = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3)).astype(np.uint8)
    with pytest.raises(ModelError, match="not finite"):
        emb.embed(crops)

    def zero_forward(x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 8), np.float32)

    with pytest.raises(ModelError, match="all zero"):
        embed_crops(zero_forward, crops, 8, 4)


def test_damaged_tensorrt_engines_are_refused(tmp_path: Path) -> None:
    from npcface.trt_runner import EngineKey, read_engine_meta, write_engine_meta

    engine = tmp_path / "m.engine"
    engine.write_bytes(os.urandom(4096))
    key = EngineKey("10.3.0", "8.6", "fp16", 1, 32, 64, 112, "0" * 64)
    write_engine_meta(engine, key, None)
    assert read_engine_meta(engine)[0] == key
    data = bytearray(engine.read_bytes())
    data[100] ^= 0xFF
    engine.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="differs from the engine recorded"):
        read_engine_meta(engine)


@pytest.mark.slow
def test_a_changed_engine_choice_cache_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from npcface.embed import Embedder

    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path / "home"))
    Embedder("sface", threads=1)  # times the engines once, records autotune.json's hash
    cache = tmp_path / "home" / "autotune.json"
    choices = json.loads(cache.read_text())
    assert len(choices) == 1 and (tmp_path / "home" / "autotune.json.sha256").is_file()
    cache.write_text(json.dumps(dict.fromkeys(choices, "opencv")))  # changed behind our back
    with caplog.at_level(logging.WARNING, logger="npcface.runtime"):
        Embedder("sface", threads=1)
    assert "cannot be trusted" in caplog.text
    assert _sha(cache) == (tmp_path / "home" / "autotune.json.sha256").read_text().strip()
