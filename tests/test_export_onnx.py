"""ONNX export: metadata round trip, dynamic batch, parity (and its failure), the SDK path."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from npcface.errors import MissingExtraError  # noqa: E402
from npcface.export.crops import aligned_crops, preprocess_crops, spread  # noqa: E402
from npcface.export.onnx import (  # noqa: E402
    export_checked,
    export_onnx,
    export_third_party,
    import_torch,
    make_info,
)
from npcface.export.parity import ParityError, check_parity  # noqa: E402
from npcface.modelinfo import RecognizerInfo, read_onnx_info  # noqa: E402

TINY = 32


class TinyNet(torch.nn.Module):
    """A stand-in backbone: conv-BN-PReLU, global depthwise conv, linear, BN1d (like MobileFaceNet)."""

    def __init__(self, size: int = TINY, dim: int = 16) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False),
            torch.nn.BatchNorm2d(8),
            torch.nn.PReLU(8),
            torch.nn.Conv2d(8, 8, size // 2, groups=8, bias=False),
            torch.nn.BatchNorm2d(8),
        )
        self.linear = torch.nn.Linear(8, dim, bias=False)
        self.features = torch.nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.linear(self.body(x).flatten(1)))


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(TinyNet())


@pytest.fixture(scope="module")
def tiny_onnx(tiny: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    meta = {
        "name": "tiny",
        "thresholds": {"default": 0.3},
        "threshold_source": "test",
        "source_checkpoint_sha256": "ab" * 32,
        "training": {"head": "npcface", "s": 32.0},
    }
    return export_onnx(tiny, path, input_size=TINY, metadata=meta)


@pytest.fixture(scope="module")
def face_files(lfw_dir: Path) -> list[Path]:
    files = sorted((lfw_dir / "images").glob("A*/*.jpg"))
    return spread(files, 12)


@pytest.fixture(scope="module")
def crops_by_size(face_files: list[Path]) -> dict[int, np.ndarray]:
    from npcface.detect import get_detector

    det = get_detector("yunet")
    return {s: aligned_crops(face_files, s, detector=det)[0] for s in (TINY, 112, 120)}


def _torch_out(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


# --- metadata -----------------------------------------------------------------------------
def test_metadata_round_trip_through_a_real_file(tiny_onnx: Path) -> None:
    info = read_onnx_info(str(tiny_onnx))
    assert info is not None
    assert (info.name, info.input_size, info.embedding_size) == ("tiny", TINY, 16)
    assert (info.channel_order, info.mean, info.std) == ("RGB", (127.5,) * 3, (128.0,) * 3)
    assert info.thresholds == {"default": 0.3} and info.threshold_source == "test"
    assert info.extra["source_checkpoint_sha256"] == "ab" * 32
    assert info.extra["training"] == {"head": "npcface", "s": 32.0}
    assert info.extra["precision"] == "fp32" and info.extra["opset"] >= 17
    # what the SDK reads is exactly what was written
    from npcface.embed import Embedder

    assert Embedder(tiny_onnx).info == info


def test_opset_at_least_17(tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_make_info_checks_the_model() -> None:
    with pytest.raises(ValueError, match="embedding size"):
        make_info(RecognizerInfo(name="x", input_size=120, embedding_size=128), "x", 120, 512)
    with pytest.raises(ValueError, match="input size"):
        make_info({"input_size": 112}, "x", 120, 512)
    info = make_info({"mean": [0, 0, 0], "note": "hi"}, "m", 120, 512)
    assert info.mean == (0.0, 0.0, 0.0) and info.extra == {"note": "hi"} and info.name == "m"


def test_opset_below_17_rejected(tiny: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny, tmp_path / "x.onnx", TINY, opset=13)


# --- dynamic batch -------------------------------------------------------------------------
def test_dynamic_batch_1_7_64(tiny: torch.nn.Module, tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    for value in (model.graph.input[0], model.graph.output[0]):
        dim0 = value.type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value")
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        x = rng.normal(size=(batch, 3, TINY, TINY)).astype(np.float32)
        (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
        assert out.shape == (batch, 16)
        np.testing.assert_allclose(out, _torch_out(tiny, x), rtol=1e-4, atol=1e-4)


def test_torchscript_exporter_also_dynamic(tiny: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(tiny, tmp_path / "ts.onnx", TINY, exporter="torchscript", simplify=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(7, 3, TINY, TINY)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], _torch_out(tiny, x), atol=1e-4)


# --- parity --------------------------------------------------------------------------------
def test_parity_passes_on_real_crops(
    tiny: torch.nn.Module, tiny_onnx: Path, crops_by_size: dict[int, np.ndarray]
) -> None:
    report = check_parity(tiny, tiny_onnx, crops_by_size[TINY])
    assert report.passed, report.summary()
    assert report.num_crops == len(crops_by_size[TINY]) >= 8
    assert {1, 7, report.num_crops} <= set(report.batch_sizes)
    assert report.min_cosine >= 0.9999 and report.max_abs_diff < 1e-3


@pytest.mark.parametrize(
    "wrong",
    [
        {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},  # normalisation forgotten
        {"channel_order": "BGR"},  # colours swapped
    ],
    ids=["no-normalisation", "bgr"],
)
def test_parity_detects_wrong_normalisation(
    tiny: torch.nn.Module,
    tiny_onnx: Path,
    crops_by_size: dict[int, np.ndarray],
    tmp_path: Path,
    wrong: dict,
) -> None:
    info = read_onnx_info(str(tiny_onnx))
    bad = replace(info, **wrong)
    crops = crops_by_size[TINY]
    report = check_parity(tiny, tiny_onnx, crops, info=bad)
    assert not report.passed
    with pytest.raises(ParityError) as err:
        check_parity(tiny, tiny_onnx, crops, info=bad, raise_on_failure=True)
    assert err.value.report.min_cosine < 0.9999
    # the export path refuses to write such a file
    out = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="broke parity"):
        export_checked(tiny, out, crops, info=bad, input_size=TINY, simplify=False)
    assert not out.exists() and (tmp_path / "bad.failed.onnx").exists()


def test_parity_detects_a_different_model(
    tiny_onnx: Path, crops_by_size: dict[int, np.ndarray]
) -> None:
    other = _randomise_bn(TinyNet(), seed=1)
    assert not check_parity(other, tiny_onnx, crops_by_size[TINY]).passed


# --- the real backbone through the SDK -----------------------------------------------------
def test_mobilefacenet_120_exports_and_runs_through_face_recognizer(
    tmp_path: Path, crops_by_size: dict[int, np.ndarray], face_files: list[Path]
) -> None:
    backbones = pytest.importorskip("npcface.training.backbones")
    from npcface import FaceRecognizer

    torch.manual_seed(0)
    model = _randomise_bn(backbones.get_backbone("mobilefacenet", input_size=120))
    crops = crops_by_size[120]
    result = export_checked(model, tmp_path / "mbf.onnx", crops, input_size=120)
    assert result.parity is not None and result.parity.passed, result.parity
    assert result.parity.min_cosine >= 0.9999

    rec = FaceRecognizer(recognizer=str(result.path), backend="onnxruntime", flip=False)
    assert rec.input_size == 120 and rec.info.embedding_size == 512
    # the full SDK path (detect -> align at 120 from the metadata -> embed) equals torch
    emb, face = rec.represent(face_files[0])
    crop = rec.align(face_files[0], face)
    ref = _torch_out(model, preprocess_crops(crop, RecognizerInfo(name="t", input_size=120)))[0]
    cos = float(emb @ ref / np.linalg.norm(ref))
    assert cos >= 0.9999


# --- third-party ONNX ----------------------------------------------------------------------
def test_torch_reference_embeds_as_the_sdk_does(
    tiny: torch.nn.Module, tiny_onnx: Path, crops_by_size: dict[int, np.ndarray]
) -> None:
    """The export's torch embedder (used to compare torch and ONNX on LFW) batches and
    flip-fuses like the SDK: unit(unit(f(x)) + unit(f(mirror x))), computed here by hand."""
    from npcface.embed import Embedder
    from npcface.export.report import TorchEmbedder

    crops = crops_by_size[TINY][:5]
    info = read_onnx_info(str(tiny_onnx))

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    plain = unit(_torch_out(tiny, preprocess_crops(crops, info)))
    mirror = unit(_torch_out(tiny, preprocess_crops(crops[:, :, ::-1].copy(), info)))
    by_hand = unit(plain + mirror)
    ref = TorchEmbedder(tiny, info, batch_size=2)  # 5 crops: batches of 2, 2 and 1
    np.testing.assert_allclose(ref.embed(crops), plain, atol=1e-5)
    np.testing.assert_allclose(ref.embed(crops, flip=True), by_hand, atol=1e-5)
    sdk = Embedder(str(tiny_onnx), backend="onnxruntime")
    np.testing.assert_allclose(sdk.embed(crops, flip=True), by_hand, atol=1e-4)
    assert ref.embed(crops[:0]).shape == (0, info.embedding_size)


def test_third_party_sface_gets_dynamic_batch_and_metadata(
    tmp_path: Path, crops_by_size: dict[int, np.ndarray]
) -> None:
    from npcface.models import get_model_spec, original_file

    spec = get_model_spec("sface")
    try:
        src = original_file(spec, allow_download=False)
    except Exception as exc:  # noqa: BLE001 - the shipped file is optional here
        pytest.skip(f"shipped SFace not available: {exc}")
    result = export_checked(src, tmp_path / "sface.onnx", crops_by_size[112], info=spec.info)
    assert result.parity is not None and result.parity.passed, result.parity
    info = read_onnx_info(str(result.path))
    assert info.name == "sface" and info.input_size == 112 and info.embedding_size == 128
    assert info.extra["source_sha256"] == spec.sha256
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.zeros((5, 3, 112, 112), np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (5, 128)
    assert export_third_party  # the public name exists


# --- errors and CLI ------------------------------------------------------------------------
def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"npcface\[export\]"):
        import_torch()


def test_cli_without_torch_says_how_to_install(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not really")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from npcface.cli import main\n"
        f"sys.exit(main(['export', 'onnx', {str(ckpt)!r}, '-o', {str(tmp_path / 'o.onnx')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "npcface[export]" in proc.stderr and "torch" in proc.stderr


def test_cli_third_party_needs_info(tmp_path: Path) -> None:
    from npcface.cli import main

    src = tmp_path / "x.onnx"
    src.write_bytes(b"")
    assert main(["export", "onnx", str(src), "-o", str(tmp_path / "y.onnx")]) == 2


# --- opsets (issue 16.8) -------------------------------------------------------------------
def test_opset_above_20_rejected(tiny: torch.nn.Module, tmp_path: Path) -> None:
    from npcface.errors import NpcfaceError

    for opset in (21, 16):
        with pytest.raises(ValueError, match=f"opset {opset} is not supported: use 17 to 20"):
            export_onnx(tiny, tmp_path / "x.onnx", TINY, opset=opset)
        with pytest.raises(NpcfaceError):  # typed, so the CLI reports it in one line
            export_onnx(tiny, tmp_path / "x.onnx", TINY, opset=opset)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("opset", ["11", "21"])
def test_cli_opset_out_of_range_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opset: str
) -> None:
    """A readable checkpoint, so that only the opset can be what the CLI refuses."""
    from npcface.cli import main
    from npcface.training.backbones import get_backbone

    kw = {"blocks": [1, 1, 1, 1], "width": 0.125, "last_channels": 32}
    model = get_backbone("mobilefacenet", input_size=TINY, embedding_size=16, **kw)
    ckpt = tmp_path / "model.pt"
    torch.save(
        {"backbone": "mobilefacenet", "backbone_kwargs": kw, "input_size": TINY,
         "embedding_size": 16, "channel_order": "RGB", "mean": 127.5, "std": 128.0,
         "state_dict": model.state_dict()},
        ckpt,
    )  # fmt: skip
    out = tmp_path / "m.onnx"
    args = ["export", "onnx", str(ckpt), "-o", str(out), "--no-parity", "--opset", opset]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"npcface export: error: opset {opset} is not supported: use 17 to 20 "
                   "(default 18; 17 with the TorchScript exporter)"]  # fmt: skip
    assert not out.exists()
    if opset == "21":  # the highest accepted opset exports
        assert main(args[:-1] + ["20"]) == 0 and out.is_file()
        assert max(o.version for o in onnx.load(str(out)).opset_import if o.domain == "") == 20
