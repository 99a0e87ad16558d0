"""``npcface train prepare`` on a few real photos: crops, no-face / several-face report, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from npcface.training.data.prepare import prepare_dataset  # noqa: E402


@pytest.fixture(scope="module")
def raw_dir(data_dir: Path, tmp_path_factory) -> Path:
    lag = data_dir / "lag"
    if not lag.is_dir():
        pytest.skip("lag/ not in the shared data")
    raw = tmp_path_factory.mktemp("raw")
    people = [p for p in sorted(lag.iterdir()) if len(list(p.glob("*.jpg"))) >= 2][:3]
    photos = []
    for person in people:
        (raw / person.name).mkdir()
        for f in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(f, raw / person.name / f.name)
            photos.append(cv2.imread(str(f)))
    (raw / "zz_synthetic").mkdir()
    # no face: flat grey; several faces: two photos side by side, the right one larger
    cv2.imwrite(str(raw / "zz_synthetic" / "blank.png"), np.full((120, 120, 3), 128, np.uint8))
    left = cv2.resize(photos[0], (100, 100))
    right = cv2.resize(photos[2], (160, 160))
    canvas = np.full((200, 300, 3), 255, np.uint8)
    canvas[50:150, 10:110] = left
    canvas[20:180, 130:290] = right
    cv2.imwrite(str(raw / "zz_synthetic" / "two.jpg"), canvas)
    (raw / "zz_synthetic" / "broken.jpg").write_bytes(b"not a jpeg")
    return raw


def test_prepare_crops_reports_and_resumes(raw_dir, tmp_path):
    out = tmp_path / "out"
    report = prepare_dataset(raw_dir, out, size=120, workers=1, progress=False)
    assert report.total == 9  # 6 real + 3 synthetic
    assert [f for f in report.no_face_files if f.startswith("zz")] == ["zz_synthetic/blank.png"]
    assert "zz_synthetic/two.jpg" in report.multiple_files
    assert report.error_files == ["zz_synthetic/broken.jpg"]
    assert report.written == 9 - report.no_face - 1  # several faces: the largest is kept
    assert report.written >= 6 and report.identities == 4
    crops = sorted(out.glob("*/*.jpg"))
    assert len(crops) == report.written
    assert all(cv2.imread(str(c)).shape == (120, 120, 3) for c in crops)
    saved = json.loads((out / "prepare_report.json").read_text())
    assert saved["no_face"] == report.no_face and saved["multiple"] == report.multiple

    # the largest face of the composite was kept: its landmarks lie in the right half
    entries = [
        json.loads(line) for line in (out / "prepare_manifest.jsonl").read_text().splitlines()
    ]
    two = next(e for e in entries if e["src"] == "zz_synthetic/two.jpg")
    assert two["faces"] >= 2 and min(x for x, _ in two["landmarks"]) > 130 / 300

    # re-running does nothing; an interrupted run (last manifest lines lost) redoes only those
    mtimes = {c: c.stat().st_mtime_ns for c in crops}
    again = prepare_dataset(raw_dir, out, size=120, workers=1, progress=False)
    assert again.resumed == 9 and again.written == report.written
    assert all(c.stat().st_mtime_ns == t for c, t in mtimes.items())
    lines = (out / "prepare_manifest.jsonl").read_text().splitlines()
    (out / "prepare_manifest.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    third = prepare_dataset(raw_dir, out, size=120, workers=2, progress=False)
    assert third.resumed == 7 and third.to_dict() | {"resumed": 0} == report.to_dict()


def test_prepare_mean_fallback_and_cli(raw_dir, tmp_path, capsys):
    from npcface.cli import main

    out = tmp_path / "eval"
    rc = main(
        ["train", "prepare", str(raw_dir), str(out), "--size", "112", "--workers", "1",
         "--no-face", "mean", "--multiple", "skip", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "mean-aligned" in text and "(skipped)" in text
    assert (out / "zz_synthetic" / "blank.jpg").is_file()  # kept via the mean landmarks
    assert not (out / "zz_synthetic" / "two.jpg").exists()
    assert cv2.imread(str(out / "zz_synthetic" / "blank.jpg")).shape == (112, 112, 3)


@pytest.fixture(scope="module")
def celeba_raw(data_dir: Path, tmp_path_factory) -> Path:
    """A few unaligned in-the-wild photos of celeba-subset (3 people, 3 photos each)."""
    celeba = data_dir / "celeba-subset"
    if not celeba.is_dir():
        pytest.skip("celeba-subset/ not in the shared data")
    raw = tmp_path_factory.mktemp("celeba_raw")
    people = [p for p in sorted(celeba.iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:3]
    for person in people:
        (raw / person.name).mkdir()
        for f in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(f, raw / person.name / f.name)
    return raw


def test_prepare_makes_the_crops_of_the_inference_default(celeba_raw, tmp_path):
    """With no pipeline options, training crops are the default recogniser's own crops
    (``FaceRecognizer().crop_many``: same detector, face policy and alignment), byte for
    byte once encoded alike, and the report names that pipeline."""
    from npcface import FaceRecognizer
    from npcface.training.data.prepare import JPEG_QUALITY, list_raw_images

    out = tmp_path / "out"
    report = prepare_dataset(celeba_raw, out, size=120, workers=1, progress=False)
    rec = FaceRecognizer()
    assert report.pipeline == rec.config.describe()
    assert "retinaface" in report.pipeline and "center" in report.pipeline
    rels = list_raw_images(celeba_raw)
    results = rec.crop_many([str(celeba_raw / r) for r in rels], size=120)
    compared = 0
    for rel, r in zip(rels, results, strict=True):
        written = out / rel.rsplit(".", 1)[0]
        written = written.with_suffix(".jpg")
        assert r.ok == written.is_file(), rel
        if r.ok:
            ok, want = cv2.imencode(".jpg", r.crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            assert ok and written.read_bytes() == want.tobytes(), rel
            compared += 1
    assert compared >= 5
    # a resumed run with another pipeline is refused: the folder would mix two
    from npcface.config import RecognizerConfig
    from npcface.training.errors import DataError

    with pytest.raises(DataError, match="another pipeline"):
        prepare_dataset(
            celeba_raw,
            out,
            size=120,
            workers=1,
            progress=False,
            config=RecognizerConfig(preset="fast"),
        )
