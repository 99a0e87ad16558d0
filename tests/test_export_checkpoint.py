"""Checkpoints written by the real trainer (``npcface train``) export and pass parity."""

from __future__ import annotations

import json
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
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(path, backbone="mobilefacenet", input_size=SIZE, embedding_size=DIM)
    with pytest.raises(ModelError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_cli_exports_a_training_run_with_parity(
    run_dir: Path, lfw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from npcface import FaceRecognizer
    from npcface.cli import main

    out = tmp_path / "smoke.onnx"
    args = ["export", "onnx", str(run_dir), "-o", str(out), "--json"]
    args += ["--crops", str(lfw_dir / "images" / "Aaron_Peirsol"), "--num-crops", "8"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parity"]["passed"] and result["parity"]["min_cosine"] >= 0.9999
    info = read_onnx_info(str(out))
    assert info.extra["source_checkpoint_sha256"] == file_sha256(run_dir / "model.pt")
    rec = FaceRecognizer(recognizer=str(out), backend="onnxruntime")
    assert (rec.input_size, rec.info.embedding_size) == (SIZE, DIM)
