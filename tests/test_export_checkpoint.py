"""Checkpoints written by the real trainer (``npcface train``) export and pass parity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npcface.errors import ModelError  # noqa: E402
from npcface.export.checkpoint import config_summary, load_checkpoint  # noqa: E402
from npcface.export.onnx import file_sha256  # noqa: E402
from npcface.modelinfo import read_onnx_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE, DIM = 32, 64


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step smoke training run (synthetic data) through the trainer itself."""
    try:
        from npcface.training.config import load_config
        from npcface.training.train import train
    except ImportError as exc:
        pytest.skip(f"trainer not available: {exc}")
    if not (REPO / "configs" / "smoke.yaml").is_file():
        pytest.skip("configs/smoke.yaml not found")
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [
            "optim.max_steps=1",
            "data.synthetic_images=32",
            f"backbone.input_size={SIZE}",
            f"backbone.embedding_size={DIM}",
            "log.tensorboard=false",
        ],
    )
    cfg.output = str(tmp_path_factory.mktemp("run") / "smoke")
    train(cfg)
    return Path(cfg.output)


def _forward(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_both_trainer_layouts_rebuild_the_same_backbone(run_dir: Path) -> None:
    from npcface.training.train import load_model

    x = np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    ref = _forward(load_model(run_dir / "model.pt"), x)
    rank_files = sorted(run_dir.glob("checkpoints/step_*/rank0.pt"))
    assert rank_files
    for source in (run_dir / "model.pt", run_dir, rank_files[-1]):
        loaded = load_checkpoint(source)
        np.testing.assert_allclose(_forward(loaded.model, x), ref, atol=1e-5)
        info = loaded.info
        assert (info.input_size, info.embedding_size) == (SIZE, DIM)
        assert (info.channel_order, info.mean, info.std) == ("RGB", (127.5,) * 3, (128.0,) * 3)
        assert info.extra["backbone"] == "mobilefacenet"
        assert len(info.extra["source_checkpoint_sha256"]) == 64
        assert loaded.reference_info.mean == info.mean
    loaded = load_checkpoint(run_dir / "model.pt")
    assert loaded.info.extra["source_checkpoint_sha256"] == file_sha256(run_dir / "model.pt")
    assert loaded.info.extra["training"]["head"] == "npcface"


def test_rank_checkpoint_carries_a_training_summary(run_dir: Path) -> None:
    (rank,) = sorted(run_dir.glob("checkpoints/step_*/rank0.pt"))[-1:]
    summary = load_checkpoint(rank).info.extra["training"]
    assert summary["head.name"] == "npcface"
    assert summary["backbone.input_size"] == SIZE
    assert not any(k.endswith(("root", "output")) for k in summary)


def test_config_summary_keeps_scalars_and_drops_paths() -> None:
    cfg = {
        "output": "/runs/x",
        "head": {"name": "npcface", "params": {"s": 32.0, "m0": 0.4}},
        "data": {"root": "/data", "mean": 127.5},
        "optim": {"milestones": [16, 24, 28]},
    }
    assert config_summary(cfg) == {
        "data.mean": 127.5,
        "head.name": "npcface",
        "head.params.m0": 0.4,
        "head.params.s": 32.0,
        "optim.milestones": [16, 24, 28],
    }


def test_plain_state_dict_needs_a_backbone_name(tmp_path: Path) -> None:
    from npcface.training.backbones import get_backbone

    model = get_backbone("mobilefacenet", input_size=SIZE, embedding_size=DIM, width=0.25)
    path = tmp_path / "weights.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    with pytest.raises(ModelError, match="--backbone"):
        load_checkpoint(path)
    # a foreign checkpoint states nothing: each missing fact is named, with its option
    with pytest.raises(ModelError, match="input size; pass --input-size"):
        load_checkpoint(path, backbone="mobilefacenet")
    with pytest.raises(ModelError, match="channel_order, mean, std; pass --info"):
        load_checkpoint(path, backbone="mobilefacenet", input_size=SIZE, embedding_size=DIM)
    from npcface.modelinfo import RecognizerInfo

    facts = RecognizerInfo(
        name="x",
        input_size=SIZE,
        embedding_size=DIM,
        channel_order="RGB",
        mean=(127.5,) * 3,
        std=(128.0,) * 3,
    )
    with pytest.raises(ModelError, match="do not fit"):  # its width is not the default
        load_checkpoint(path, backbone="mobilefacenet", info=facts)
    with pytest.raises(ModelError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_the_trainer_writes_a_model_card_and_export_reads_it(run_dir: Path) -> None:
    """The facts travel with the weights: model_card.json in the run folder and inside
    every checkpoint; export takes them from there (nothing guessed)."""
    from npcface.training.modelcard import MODEL_CARD, read_model_card

    card = json.loads((run_dir / MODEL_CARD).read_text())
    info, backbone, kwargs = read_model_card(card)
    assert (backbone, info.input_size, info.embedding_size) == ("mobilefacenet", SIZE, DIM)
    assert (info.channel_order, info.mean, info.std) == ("RGB", (127.5,) * 3, (128.0,) * 3)
    for source in [run_dir / "model.pt", *sorted(run_dir.glob("checkpoints/step_*/rank0.pt"))]:
        assert torch.load(source, weights_only=True)["model_card"] == card
    # a bare state dict beside the card (a run folder's weights, saved by hand) needs nothing
    model = load_checkpoint(run_dir / "model.pt").model
    bare = run_dir / "bare.pt"
    torch.save(model.state_dict(), bare)
    try:
        loaded = load_checkpoint(bare)
        assert (loaded.info.input_size, loaded.info.embedding_size) == (SIZE, DIM)
        assert loaded.info.channel_order == "RGB" and loaded.info.extra["backbone"] == backbone
    finally:
        bare.unlink()


def test_cli_exports_a_training_run_with_parity(
    run_dir: Path, lfw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from npcface import FaceRecognizer
    from npcface.cli import main

    out = tmp_path / "smoke.onnx"
    args = ["export", "onnx", str(run_dir), "-o", str(out), "--json"]
    args += ["--crops", str(lfw_dir / "images" / "Aaron_Peirsol"), "--num-crops", "8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["parity"]["passed"] and result["parity"]["min_cosine"] >= 0.9999
    n = len(list((lfw_dir / "images" / "Aaron_Peirsol").iterdir()))  # 4 photos
    assert "aligning: 100%" in captured.err and f"{n}/{n}" in captured.err  # a progress bar
    info = read_onnx_info(str(out))
    assert info.extra["source_checkpoint_sha256"] == file_sha256(run_dir / "model.pt")
    rec = FaceRecognizer(recognizer=str(out), backend="onnxruntime")
    assert (rec.input_size, rec.info.embedding_size) == (SIZE, DIM)


# --- checkpoints from elsewhere (issue 16.6) -----------------------------------------------
TINY_KW = {"blocks": [1, 1, 1, 1], "width": 0.125, "last_channels": 32}


def _mbf() -> torch.nn.Module:
    from npcface.training.backbones import get_backbone

    torch.manual_seed(0)
    return get_backbone("mobilefacenet", input_size=SIZE, embedding_size=DIM, **TINY_KW).eval()


def _model_pt(model: torch.nn.Module, state: dict, **extra: object) -> dict:
    """The model.pt layout (Trainer.export_model) around ``state``, plus ``extra`` keys."""
    return {
        "backbone": "mobilefacenet",
        "backbone_kwargs": TINY_KW,
        "input_size": SIZE,
        "embedding_size": DIM,
        "channel_order": "RGB",
        "mean": 127.5,
        "std": 128.0,
        "state_dict": state,
        **extra,
    }


def test_numpy_scalars_beside_the_weights_are_loaded(tmp_path: Path) -> None:
    model = _mbf()
    path = tmp_path / "ckpt.pt"
    extra = {"best_acc": np.float64(0.9931), "epoch": np.int64(7), "hist": np.arange(3.0)}
    torch.save(_model_pt(model, model.state_dict(), **extra), path)
    loaded = load_checkpoint(path)
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(_forward(loaded.model, x), _forward(model, x), atol=1e-6)


def test_unsafe_object_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    import argparse

    model = _mbf()
    path = tmp_path / "ckpt.pt"
    torch.save(_model_pt(model, model.state_dict(), args=argparse.Namespace(lr=0.1)), path)
    with pytest.raises(ModelError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "argparse.Namespace" in msg and "\n" not in msg and "add_safe_globals" not in msg


@pytest.mark.parametrize("prefix", ["_orig_mod.module.", "module._orig_mod.", "module."])
def test_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str) -> None:
    model = _mbf()
    path = tmp_path / "ckpt.pt"
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save(_model_pt(model, state), path)
    loaded = load_checkpoint(path)
    x = np.random.default_rng(1).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(_forward(loaded.model, x), _forward(model, x), atol=1e-6)


def test_mismatch_is_described_in_one_short_line(tmp_path: Path) -> None:
    from npcface.training.backbones import get_backbone

    path = tmp_path / "r18.pt"
    torch.save(get_backbone("iresnet18", input_size=SIZE, embedding_size=DIM).state_dict(), path)
    from npcface.modelinfo import RecognizerInfo

    facts = RecognizerInfo(name="x", input_size=SIZE, embedding_size=DIM, channel_order="RGB")
    with pytest.raises(ModelError) as err:
        load_checkpoint(path, backbone="mobilefacenet", info=facts)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 600
    assert re.search(r"\d+ missing \(.*\); \d+ unexpected \(.*more\)", msg)


class _ArcBlock(torch.nn.Module):
    """arcface_torch's IBasicBlock, written out with its own attribute names."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        nn = torch.nn
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class _ArcIResNet(torch.nn.Module):
    """arcface_torch's IResNet (112 x 112 in, 7 x 7 final map), narrow for speed."""

    def __init__(self, layers: tuple[int, ...], chans: tuple[int, ...], dim: int) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, chans[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0], eps=1e-5)
        self.prelu = nn.PReLU(chans[0])
        cin = chans[0]
        for i, (n, cout) in enumerate(zip(layers, chans, strict=True), start=1):
            blocks = [_ArcBlock(cin, cout, 2)] + [_ArcBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(cin * 7 * 7, dim)
        self.features = nn.BatchNorm1d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def test_arcface_torch_iresnet_checkpoint_is_mapped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arc = _ArcIResNet((2, 2, 2, 2), (16, 32, 64, 128), 32)
    g = torch.Generator().manual_seed(1)
    for m in arc.modules():  # non-trivial BN statistics, so a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    arc.eval()
    path = tmp_path / "backbone.pth"  # what arcface_torch saves: backbone.module.state_dict()
    torch.save(arc.state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.info.extra["backbone"] == "iresnet18"
    assert (loaded.info.input_size, loaded.info.embedding_size) == (112, 32)
    assert (loaded.info.mean, loaded.info.std) == ((127.5,) * 3, (127.5,) * 3)
    x = np.random.default_rng(2).normal(size=(2, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(_forward(loaded.model, x), _forward(arc, x), rtol=1e-4, atol=1e-4)
    # arcface_torch's training checkpoint keeps the backbone under state_dict_backbone
    torch.save({"state_dict_backbone": arc.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    again = load_checkpoint(tmp_path / "ckpt.pt")
    np.testing.assert_allclose(_forward(again.model, x), _forward(arc, x), rtol=1e-4, atol=1e-4)


def test_a_fresh_export_with_calibrate_verifies_at_once(
    run_dir: Path, lfw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reported: a fresh export had no thresholds, so FaceRecognizer(recognizer=x).verify()
    stopped until 'npcface calibrate' was run. --calibrate DIR stores them at export."""
    import shutil

    from npcface import FaceRecognizer
    from npcface.cli import main

    # 40 LFW people, 4 photos each: 12,480 impostor pairs, enough for FAR 1e-3
    people = tmp_path / "people"
    many = [d for d in sorted((lfw_dir / "images").iterdir()) if len(list(d.iterdir())) >= 4]
    for d in many[:40]:
        (people / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:4]:
            shutil.copy(f, people / d.name / f.name)
    out = tmp_path / "fresh.onnx"
    args = ["export", "onnx", str(run_dir), "-o", str(out), "--json", "--no-progress"]
    args += ["--crops", str(people / many[0].name), "--num-crops", "4"]
    args += ["--calibrate", str(people)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    stored = read_onnx_info(str(out)).thresholds
    assert stored == pytest.approx(result["calibration"]["thresholds"])
    assert "default" in stored and "far=0.001" in stored
    a = lfw_dir / "images" / "Tony_Blair" / "Tony_Blair_0020.jpg"
    b = lfw_dir / "images" / "Tony_Blair" / "Tony_Blair_0021.jpg"
    verdict = FaceRecognizer(recognizer=str(out)).verify(a, b)  # no further step
    assert verdict.threshold == pytest.approx(stored["default"])
