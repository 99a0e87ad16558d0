"""Bulk enrolment: resumable, failures reported, durable under SIGKILL; real recogniser path."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from npcface import FaceRecognizer
from npcface.enroll import enroll_images, list_images
from npcface.errors import GalleryError, NoFaceError
from npcface.gallery import Gallery
from npcface.modelinfo import RecognizerInfo
from npcface.results import Face

DIM = 32
TESTS = Path(__file__).resolve().parent


class FakeDetector:
    """A face in any image that is not almost black, landmarks at fixed relative places."""

    name = "fake"

    def detect(self, image):
        if image.mean() < 5:
            return []
        h, w = image.shape[:2]
        marks = np.array(
            [
                [w * 0.3, h * 0.4],
                [w * 0.7, h * 0.4],
                [w * 0.5, h * 0.6],
                [w * 0.35, h * 0.8],
                [w * 0.65, h * 0.8],
            ],
            np.float32,
        )
        return [Face(np.array([0, 0, w, h], np.float32), marks, 0.99)]


class FakeEmbedder:
    """A fixed random projection of the 16 x 16 crop, so similar images embed alike."""

    info = RecognizerInfo(name="fake", input_size=16, embedding_size=DIM)
    input_size = 16

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.proj = np.random.default_rng(123).standard_normal((16 * 16 * 3, DIM))

    def embed(self, crops, flip=False):
        time.sleep(self.delay)
        x = crops.reshape(len(crops), -1).astype(np.float64) / 255.0 - 0.5
        e = (x @ self.proj).astype(np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)


class FakeRecognizer(FaceRecognizer):
    """The real pipeline (decode, detect, choose, align, batch) with fast, deterministic
    stand-in models, so that enrolment tests run in seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(
            detector=FakeDetector(), face_policy="largest", flip=False, enroll_quality=0
        )
        self._embedder = FakeEmbedder(delay)


def make_images(root: Path, identities: int = 8, per_identity: int = 8, seed: int = 0) -> int:
    """identity sub-folders of noisy variants of a per-identity pattern, plus 2 black images
    (no face) and a file that is not an image. Returns the number of enrollable images."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        base = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
        base = cv2.resize(base, (48, 48), interpolation=cv2.INTER_NEAREST)
        folder = root / f"person{i:02d}"
        folder.mkdir(parents=True)
        for j in range(per_identity):
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{j:03d}.png"), img)
    cv2.imwrite(str(root / "person00" / "black1.png"), np.zeros((40, 40, 3), np.uint8))
    cv2.imwrite(str(root / "person01" / "black2.png"), np.zeros((44, 40, 3), np.uint8))
    (root / "person02" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return identities * per_identity


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from test_gallery_enroll import DIM, FakeRecognizer
    from npcface.gallery import Gallery
    from npcface.enroll import enroll_images, list_images


    def main():
        path, images, ack_path = sys.argv[1:4]
        if os.path.exists(os.path.join(path, "gallery.db")):
            g = Gallery.open(path)
        else:
            g = Gallery.create(path, DIM, model="fake")
        ack = open(ack_path, "a")

        def on_commit(ids, items, digests):
            for i, it, d in zip(ids, items, digests):
                ack.write(json.dumps([i, it.identity, it.path, d]) + "\\n")
            ack.flush()
            os.fsync(ack.fileno())

        summary = enroll_images(
            g, FakeRecognizer(delay=float(sys.argv[4])), list_images(images), workers=1,
            batch_size=4, save_interval=0.2, on_commit=on_commit, progress=False,
        )
        g.close()
        print(json.dumps(summary.to_dict()))


    if __name__ == "__main__":  # worker processes are spawned: they import this file
        main()
    """
)


def _run(script: Path, gallery: Path, images: Path, ack: Path, delay: float):
    return subprocess.Popen(
        [sys.executable, str(script), str(gallery), str(images), str(ack), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the decoder too
    )


def _acked(ack: Path) -> list[list]:
    if not ack.exists():
        return []
    return [json.loads(line) for line in ack.read_text().splitlines() if line.strip()]


def _sigkill_after_acks(proc: subprocess.Popen, ack: Path, n: int, timeout: float) -> list[list]:
    """SIGKILL the enrolment's process group once ``n`` templates are acknowledged (or it
    ended, or ``timeout`` passed); the acknowledgements written by then."""
    deadline = time.monotonic() + timeout
    while len(_acked(ack)) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    return _acked(ack)


def test_sigkill_mid_enrolment_loses_nothing_and_resumes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    valid = make_images(images)
    gallery, ack = tmp_path / "gallery", tmp_path / "ack.jsonl"
    script = tmp_path / "enroll_script.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))

    proc = _run(script, gallery, images, ack, delay=0.25)
    acked = _sigkill_after_acks(proc, ack, 12, timeout=60)
    assert 12 <= len(acked) < valid, "the kill must land mid-way"

    fake = FakeRecognizer()
    with Gallery.open(gallery) as g:
        report = g.check()
        assert report.ok, report
        for tid, identity, path, digest in acked:
            assert tid in g.templates(identity)
            assert digest in g.content_hashes()
            # the index answers for every acknowledged template: its own vector finds it
            best = g.search(fake.represent(path)[0], k=1)[0][0]
            assert best.template_id == tid and best.identity == identity
            assert best.similarity == pytest.approx(1.0, abs=1e-5)
        done_before = g.info().templates
    assert done_before >= len(acked)

    proc = _run(script, gallery, images, ack, delay=0.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["skipped"] == done_before
    assert summary["enrolled"] == valid - done_before
    assert summary["failed"] == 3
    with Gallery.open(gallery) as g:
        assert g.info().templates == valid and len(g) == 8 and g.check().ok
        assert len(g.content_hashes()) == valid  # nothing enrolled twice
        for tid, identity, _, _ in acked:  # first run's templates kept their ids
            assert tid in g.templates(identity)
    with open(gallery / "enroll-report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["kind"] for r in rows) == ["no_face", "no_face", "unreadable"]


def test_csv_input_duplicates_and_report(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_images(images, identities=3, per_identity=4)
    shutil.copy(images / "person00" / "000.png", images / "person01" / "copy.png")
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "identity"])
        for item in list_images(images):
            w.writerow([os.path.relpath(item.path, tmp_path), item.identity])
        w.writerow(["images/missing.png", "ghost"])
    items = list_images(listing)
    assert items[0].path.startswith(str(tmp_path)) and items[-1].identity == "ghost"
    fake = FakeRecognizer()
    with Gallery.create(tmp_path / "g", DIM) as g:
        summary = enroll_images(g, fake, items, workers=0, batch_size=5, progress=False)
        assert g.model == "fake"
        assert (summary.enrolled, summary.skipped, summary.failed) == (12, 1, 4)
        with open(tmp_path / "g" / "enroll-report.csv") as fh:
            rows = list(csv.DictReader(fh))
        kinds = sorted(r["kind"] for r in rows)
        assert kinds == ["duplicate", "no_face", "no_face", "unreadable", "unreadable"]
        # identify one more noisy image of person01 by its pattern
        q = fake.represent(images / "person01" / "003.png")[0]
        assert g.search(q, k=1)[0][0].identity == "person01"
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    with pytest.raises(GalleryError, match="bad.csv:1"):
        list_images(bad)
    with pytest.raises(GalleryError, match="no such folder"):
        list_images(tmp_path / "nope")


def test_model_mismatch_is_refused(tmp_path: Path) -> None:
    with (
        Gallery.create(tmp_path / "g", DIM, model="arcface") as g,
        pytest.raises(GalleryError, match="arcface"),
    ):
        enroll_images(g, FakeRecognizer(), [], progress=False)
    with Gallery.create(tmp_path / "h", 64) as g, pytest.raises(GalleryError, match="64-dim"):
        enroll_images(g, FakeRecognizer(), [], progress=False)


# ------------------------------------------------------------- real recogniser
@pytest.fixture(scope="module")
def recognizer():
    rec = pytest.importorskip("npcface.recognizer").FaceRecognizer()
    try:
        rec.info  # noqa: B018 - loads the model now, skips cleanly when it is unavailable
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"default recogniser unavailable: {exc}")
    return rec


PEOPLE = ("Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder")


def _lfw_subset(lfw_dir: Path, root: Path, per_person: int) -> None:
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for f in sorted((lfw_dir / "images" / person).iterdir())[:per_person]:
            shutil.copy(f, root / person / f.name)


def test_real_recognizer_enrol_kill_resume_identify(
    tmp_path: Path, lfw_dir: Path, recognizer
) -> None:
    images = tmp_path / "images"
    _lfw_subset(lfw_dir, images, per_person=4)
    cv2.imwrite(str(images / "Tony_Blair" / "wall.png"), np.full((200, 200, 3), 90, np.uint8))
    gallery, ack = tmp_path / "gallery", tmp_path / "ack.jsonl"
    script = tmp_path / "real_script.py"
    script.write_text(
        SCRIPT.replace("FakeRecognizer(delay=float(sys.argv[4]))", "FaceRecognizer()")
        .replace(
            "from test_gallery_enroll import DIM, FakeRecognizer",
            "from npcface.recognizer import FaceRecognizer",
        )
        .replace('Gallery.create(path, DIM, model="fake")', "Gallery.create(path, 128)")
        .format(tests=str(TESTS))
    )
    proc = _run(script, gallery, images, ack, delay=0.0)
    acked = _sigkill_after_acks(proc, ack, 4, timeout=120)
    assert len(acked) >= 4
    with Gallery.open(gallery) as g:
        assert g.check().ok and g.model == recognizer.info.name
        for tid, identity, _, _ in acked:
            assert tid in g.templates(identity)
    # resume in-process with worker processes
    with Gallery.open(gallery) as g:
        summary = enroll_images(
            g, recognizer, list_images(images), workers=1, batch_size=4, progress=False
        )
        assert summary.failed == 1 and summary.enrolled + summary.skipped == 16
        assert summary.enrolled > 0 and summary.skipped >= len(acked)
        assert g.info().templates == 16 and g.check().ok
        probe = lfw_dir / "images" / "Gerhard_Schroeder" / "Gerhard_Schroeder_0010.jpg"
        top = recognizer.identify(g, probe, k=3)
        assert top[0].identity == "Gerhard_Schroeder"
        assert recognizer.identify(g, probe, k=3, threshold=0.99) == []
        tids = recognizer.enroll(g, "Gerhard_Schroeder", [probe], metadata={"role": "chancellor"})
        assert recognizer.identify(g, probe, k=1)[0].template_id == tids[0]
        with pytest.raises(NoFaceError):
            recognizer.enroll(g, "nobody", [images / "Tony_Blair" / "wall.png"])
        assert "nobody" not in g


def test_pipeline_workers_match_this_process(tmp_path: Path, lfw_dir: Path, recognizer) -> None:
    """Worker processes that rebuild the recogniser from its configuration (one inference
    thread each) enrol what this process enrols, with the same embeddings, the same report
    and, of two byte-identical files, the first one listed."""
    images = tmp_path / "images"
    files = {p: sorted((lfw_dir / "images" / p).iterdir()) for p in PEOPLE}
    for person, photos in files.items():
        (images / person).mkdir(parents=True)
        for f in photos[:3]:
            shutil.copy(f, images / person / f.name)
    (images / "Tony_Blair" / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(images / "Colin_Powell" / "wall.png"), np.full((160, 160, 3), 90, np.uint8))
    first = images / "Tony_Blair" / files["Tony_Blair"][0].name
    shutil.copy(first, images / "Tony_Blair" / "zz_again.jpg")
    items = list_images(images)
    probes = recognizer.embed_many([str(f[5]) for f in files.values()])
    probes = np.stack([p.embedding for p in probes])
    runs = {}
    import multiprocessing

    for workers in (2, 0):
        children: list[int] = []  # worker processes alive at each commit

        def seen(*_: object) -> None:
            children.append(len(multiprocessing.active_children()))  # noqa: B023

        with Gallery.create(tmp_path / f"g{workers}", 128) as g:
            s = enroll_images(
                g, recognizer, items, workers=workers, batch_size=4, progress=False, on_commit=seen
            )
            assert children and set(children) == {workers}
            with open(s.report, newline="") as fh:
                report = {
                    (Path(r["path"]).name, r["kind"], r["reason"]) for r in csv.DictReader(fh)
                }
            runs[workers] = (s, g.template_counts(), g.search(probes, k=3), report)
    (s2, counts2, hits2, report2), (s0, counts0, hits0, report0) = runs[2], runs[0]
    assert (
        (s2.enrolled, s2.skipped, s2.failed)
        == (s0.enrolled, s0.skipped, s0.failed)
        == (
            12,
            1,
            2,
        )
    )
    assert counts2 == counts0 == {p: 3 for p in PEOPLE}
    assert report2 == report0
    assert ("zz_again.jpg", "duplicate", f"same as {first}") in report2
    for got, want, person in zip(hits2, hits0, PEOPLE, strict=True):
        assert [m.identity for m in got] == [m.identity for m in want]
        assert got[0].identity == person
        np.testing.assert_allclose(
            [m.similarity for m in got], [m.similarity for m in want], atol=1e-4
        )
