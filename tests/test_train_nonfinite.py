"""Non-finite training (issue 16.1): a diverging run stops with a clear error before NaN
reaches the weights or a checkpoint; rotation keeps the last finite checkpoints; the grad
scaler's skipped steps are bounded; export names NaN weights instead of 'max |diff| 0'."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_train_trainer import REPO, tiny_config  # noqa: E402

from npcface.errors import ModelError  # noqa: E402
from npcface.training.errors import NonFiniteError  # noqa: E402
from npcface.training.train import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 12, (8,), generator=gen)


def _params(t: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*t.backbone.parameters(), *t.pfc.parameters()]]


def _all_finite(state: dict) -> bool:
    return all(
        torch.isfinite(v).all()
        for v in state.values()
        if torch.is_tensor(v) and v.is_floating_point()
    )


def test_nan_loss_stops_the_step_before_the_weights_change(tmp_path):
    t = Trainer(tiny_config(tmp_path))
    with torch.no_grad():
        t.pfc.weight[0, 0] = float("nan")  # a poisoned class centre: every cosine row is NaN
    before = _params(t)
    with pytest.raises(NonFiniteError, match=r"step 1: the loss .*not finite"):
        t._train_step(*_batch())
    after = _params(t)
    for b, a in zip(before, after, strict=True):  # NaN == NaN for the poisoned entry
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)


def test_nan_gradient_stops_without_a_scaler(tmp_path):
    t = Trainer(tiny_config(tmp_path))
    first = next(t.backbone.parameters())
    first.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = _params(t)
    with pytest.raises(NonFiniteError, match="gradient"):
        t._train_step(*_batch())
    for b, a in zip(before, _params(t), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_diverging_run_stops_and_rotation_keeps_finite_checkpoints(tmp_path):
    cfg = tiny_config(
        tmp_path,
        optim__lr=1e5,  # diverges within a few steps
        optim__max_steps=12,
        optim__warmup_epochs=0.0,
        optim__milestones=[],
        log__checkpoint_every_steps=1,
        log__keep_checkpoints=2,
    )
    with pytest.raises(NonFiniteError) as err:
        Trainer(cfg).fit()
    stopped = int(re.search(r"step (\d+)", str(err.value)).group(1))
    assert 2 < stopped < 12
    out = Path(cfg.output)
    assert not (out / "model.pt").exists()  # no model written from a broken run
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == [f"step_{s:08d}" for s in (stopped - 2, stopped - 1)]
    assert (out / "checkpoints" / "latest").read_text().strip() == ckpts[-1].name
    assert str(ckpts[-1]) in str(err.value)  # the message says where to resume from
    for c in ckpts:
        state = torch.load(c / "rank0.pt", weights_only=True)
        assert _all_finite(state["backbone"]) and _all_finite(state["partial_fc"])


def test_cli_exits_2_with_one_line_on_divergence(tmp_path, capsys):
    from npcface.cli import main

    rc = main(
        ["train", "run", str(REPO / "configs/smoke.yaml"), "--output", str(tmp_path / "o"),
         "--set", "optim.max_steps=6", "--set", "backbone.input_size=32",
         "--set", "optim.lr=1e8", "--set", "optim.warmup_epochs=0"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2
    assert "last loss" not in captured.out
    (line,) = [x for x in captured.err.splitlines() if x.startswith("npcface train: error:")]
    assert "not finite" in line
    assert not (tmp_path / "o" / "model.pt").exists()


def test_checkpoint_with_nan_weights_is_not_written(tmp_path):
    cfg = tiny_config(tmp_path, optim__max_steps=2, log__checkpoint_every_steps=1)
    t = Trainer(cfg)
    t.fit(stop_at_step=1)
    with torch.no_grad():
        next(t.backbone.parameters())[0, 0, 0, 0] = float("nan")
    t.step = 2
    with pytest.raises(NonFiniteError, match="NaN/inf.*Last finite checkpoint: .*step_00000001"):
        t.save_checkpoint()
    assert not (Path(cfg.output) / "checkpoints" / "step_00000002").exists()
    assert (Path(cfg.output) / "checkpoints" / "latest").read_text().strip() == "step_00000001"


def test_grad_scaler_skips_are_bounded(tmp_path):
    """fp16's GradScaler skips steps with inf gradients (its design); more than
    amp.max_skipped_steps in a row stop the run. A CPU GradScaler stands in for CUDA's."""
    t = Trainer(tiny_config(tmp_path, amp__max_skipped_steps=3))
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    first = next(t.backbone.parameters())
    handle = first.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = _params(t)
    images, labels = _batch()
    for k in range(3):  # skipped, scale halved each time, weights untouched
        t._train_step(images, labels)
        assert t.scaler.get_scale() == 2.0 ** (9 - k)
    with pytest.raises(NonFiniteError, match="skipped 4 steps in a row"):
        t._train_step(images, labels)
    for b, a in zip(before, _params(t), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    handle.remove()
    t._train_step(images, labels)  # a finite step resets the count and updates
    assert t.skipped_in_row == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(t), strict=True))


# ----------------------------------------------------------------------------- export side


def test_export_refuses_nan_weights_naming_them(tmp_path):
    from npcface.export.checkpoint import load_checkpoint

    cfg = tiny_config(tmp_path, optim__max_steps=1)
    Trainer(cfg).fit()
    model_pt = Path(cfg.output) / "model.pt"
    state = torch.load(model_pt, weights_only=True)
    float_keys = [k for k, v in state["state_dict"].items() if v.is_floating_point()]
    for k in float_keys[:3]:
        state["state_dict"][k] = torch.full_like(state["state_dict"][k], float("nan"))
    torch.save(state, model_pt)
    with pytest.raises(ModelError) as err:
        load_checkpoint(model_pt)
    msg = str(err.value)
    assert f"3 of {len(state['state_dict'])} tensors" in msg and float_keys[0] in msg
    assert "\n" not in msg


def test_parity_of_a_nan_model_does_not_report_zero_difference(tmp_path):
    """A source model with NaN outputs used to pass through as 'max |diff| 0'."""
    pytest.importorskip("onnxruntime")
    from npcface.export.onnx import export_onnx
    from npcface.export.parity import ParityError, check_parity

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 32, metadata={"name": "m"})
    with torch.no_grad():
        model[0].weight[0] = float("nan")  # the source now gives NaN, the ONNX file does not
    crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ParityError, match="NaN") as err:
        check_parity(model, path, crops, raise_on_failure=True)
    assert "max |diff| 0 " not in str(err.value)
