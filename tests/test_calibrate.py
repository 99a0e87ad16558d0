"""Threshold calibration: the FAR rule against brute force, and ``npcface calibrate`` writing
thresholds into an exported model's metadata so that its verify works."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from npcface import FaceRecognizer
from npcface.cli import main
from npcface.errors import InvalidArgumentError, ModelError, NpcfaceError
from npcface.eval.calibrate import pair_scores_by_label, thresholds_at_fars, write_thresholds
from npcface.modelinfo import RecognizerInfo, read_onnx_info, write_onnx_info

FARS = (1e-1, 1e-2, 1e-3)


def _check_far_rule(thr: float, impostor: np.ndarray, far: float, eps: float = 0.0) -> None:
    """``thr`` accepts at most floor(far * n) impostors, and any lower threshold more."""
    k = int(np.floor(far * len(impostor)))
    assert sum(float(s) >= thr + eps for s in impostor) <= k
    assert sum(float(s) >= thr - max(eps, 1e-7) for s in impostor) > k


def test_thresholds_follow_the_far_rule():
    rng = np.random.default_rng(1)
    imp = rng.normal(0.0, 0.1, 5000).astype(np.float32)
    gen = rng.normal(0.6, 0.1, 300).astype(np.float32)
    thresholds, tar = thresholds_at_fars(gen, imp, FARS)
    for far in FARS:
        thr = thresholds[f"far={far:g}"]
        _check_far_rule(thr, imp, far)
        assert tar[f"far={far:g}"] == pytest.approx(np.mean([g >= thr for g in gen]))
    assert thresholds["default"] == thresholds["far=0.001"]
    with pytest.raises(InvalidArgumentError):
        thresholds_at_fars(gen, imp[:0])
    with pytest.raises(InvalidArgumentError):
        thresholds_at_fars(gen, imp, (1.5,))


def test_pair_scores_split_by_identity():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(7, 4)).astype(np.float32)
    ids = np.array([0, 0, 1, 1, 1, 2, 2])
    gen, imp = pair_scores_by_label(emb, ids, block=3)
    want_gen, want_imp = [], []
    for i in range(7):
        for j in range(i + 1, 7):
            (want_gen if ids[i] == ids[j] else want_imp).append(float(emb[i] @ emb[j]))
    np.testing.assert_allclose(sorted(gen), sorted(want_gen), rtol=1e-6)
    np.testing.assert_allclose(sorted(imp), sorted(want_imp), rtol=1e-6)


PEOPLE = (
    "Tony_Blair", "Colin_Powell", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
    "Hugo_Chavez", "Junichiro_Koizumi", "Jean_Chretien", "John_Ashcroft", "Jacques_Chirac",
)  # fmt: skip
PER_PERSON = 16  # 160 images: 11,520 impostor pairs, enough for FAR 1e-3 (10,000), not 1e-4


@pytest.fixture(scope="module")
def small_identities(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    for name in PEOPLE:
        (root / name).mkdir()
        for n in range(1, PER_PERSON + 1):
            src = lfw_dir / "images" / name / f"{name}_{n:04d}.jpg"
            os.symlink(src, root / name / src.name)
    return root


@pytest.mark.slow
def test_calibrate_writes_thresholds_an_exported_model_uses(small_identities, tmp_path):
    fast = FaceRecognizer(preset="fast")
    proto = onnx.load(str(fast.embedder.path))
    info = RecognizerInfo(
        name="my-model",
        input_size=112,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        embedding_size=128,
    )
    write_onnx_info(proto, info)
    model = tmp_path / "x.onnx"
    onnx.save(proto, str(model))
    img1 = small_identities / "Tony_Blair" / "Tony_Blair_0001.jpg"
    img2 = small_identities / "Tony_Blair" / "Tony_Blair_0002.jpg"
    with pytest.raises(NpcfaceError, match="no calibrated default threshold"):
        FaceRecognizer(recognizer=str(model), preset="fast").verify(img1, img2)

    out = tmp_path / "calibrated.onnx"
    rc = main(
        ["calibrate", str(model), "--data", str(small_identities), "--preset", "fast"]
        + ["--out", str(out), "--no-progress"]
    )
    assert rc == 0
    stored = read_onnx_info(str(out))
    assert read_onnx_info(str(model)).thresholds == {}  # --out leaves the source alone
    assert "all 1,200 genuine and 11,520 impostor image pairs" in stored.threshold_source
    # 11,520 impostor pairs support FAR 1e-2 and 1e-3 (10/FAR pairs each), not 1e-4..1e-6
    assert set(stored.thresholds) == {"far=0.01", "far=0.001", "default"}
    assert "not calibrated (too few impostor pairs): far=0.0001, far=1e-05, far=1e-06" in (
        stored.threshold_source
    )

    # independent check: embed every image through the public API, score all pairs by hand
    rec = FaceRecognizer(recognizer=str(out), preset="fast")
    paths = sorted(small_identities.glob("*/*.jpg"))
    emb = {p: rec.embed(p) for p in paths}
    imp = np.array(
        [
            float(emb[a] @ emb[b])
            for i, a in enumerate(paths)
            for b in paths[i + 1 :]
            if a.parent != b.parent
        ]
    )
    for far in (1e-2, 1e-3):
        _check_far_rule(stored.thresholds[f"far={far:g}"], imp, far, eps=1e-5)
    result = rec.verify(img1, img2)
    assert result.threshold == stored.thresholds["default"]
    with pytest.raises(InvalidArgumentError, match="no threshold calibrated for FAR 0.0001"):
        rec.default_threshold(far=1e-4)


@pytest.mark.slow
def test_calibrate_samples_with_limit_and_refuses_too_few_pairs(small_identities, capsys):
    """--limit embeds a seeded sample (said in the output, with a time estimate); too few
    impostor pairs for the default FAR 1e-3 is refused, with how many it needs."""
    import json

    args = ["calibrate", "sface-int8", "--data", str(small_identities), "--preset", "fast"]
    assert main([*args, "--limit", "150", "--dry-run", "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["images"] == 150 and "a sample (seed 0) of 150 of 160 listed" in report["source"]
    assert sorted(report["unsupported"]) == ["far=0.0001", "far=1e-05", "far=1e-06"]
    assert "needs 100,000 impostor pairs" in report["unsupported"]["far=0.0001"]
    assert "calibrate: embedding 150 images, about " in captured.err
    assert main([*args, "--limit", "60", "--dry-run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot support the default FAR 0.001 (it needs 10,000)" in err


def test_supported_fars_need_ten_over_far_pairs():
    from npcface.eval.calibrate import supported_fars

    ok, bad = supported_fars((1e-2, 1e-3, 1e-4), 10_000)
    assert ok == [1e-2, 1e-3] and list(bad) == ["far=0.0001"]
    ok, bad = supported_fars((1e-2, 1e-3), 9_999)
    assert ok == [1e-2] and list(bad) == ["far=0.001"]


def test_write_thresholds_refuses_models_without_metadata(tmp_path):
    from npcface.eval.calibrate import Calibration

    cal = Calibration({"default": 0.3}, {}, 1, 0, 1, 1, "x")
    with pytest.raises(ModelError, match="npcface .onnx"):
        write_thresholds("sface", cal)
    bare = tmp_path / "bare.onnx"
    onnx.save(onnx.load(str(FaceRecognizer(preset="fast").embedder.path)), str(bare))
    if read_onnx_info(str(bare)) is None:
        with pytest.raises(ModelError, match="no npcface metadata"):
            write_thresholds(bare, cal)
