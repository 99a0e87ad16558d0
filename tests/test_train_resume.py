"""Resume with changed settings (issue 16.2) and logs after a resume (issue 16.5)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_train_trainer import REPO, _write_lfw_layout, tiny_config  # noqa: E402

from npcface.training.errors import ConfigError  # noqa: E402
from npcface.training.train import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FLAT = {"optim__warmup_epochs": 0.0, "optim__milestones": [], "optim__max_steps": 6}


def _sgd_lr(before: dict, after: dict, buffers: dict) -> float:
    """The lr SGD used, from p_after = p_before - lr * buf (torch's SGD with momentum and
    weight decay: buf is the updated momentum buffer), on the largest buffer entries."""
    ratios = []
    for name, p0 in before.items():
        buf = buffers[name]
        mask = buf.abs() > 1e-3 * buf.abs().max()
        ratios.append(((p0 - after[name])[mask] / buf[mask]).flatten())
    return float(torch.cat(ratios).median())


def test_resume_applies_a_new_lr_and_records_what_ran(tmp_path):
    cfg = tiny_config(tmp_path, **FLAT)  # lr 0.1
    Trainer(cfg).fit(stop_at_step=3)

    t = Trainer(tiny_config(tmp_path, **FLAT, optim__lr=0.01))
    t.load_checkpoint("latest")
    params = {n: p for n, p in t.backbone.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    images, labels = next(iter(t.loader))
    t._train_step(images, labels)
    after = {n: p.detach().clone() for n, p in params.items()}
    buffers = {n: t.optimizer.state[p]["momentum_buffer"] for n, p in params.items()}
    assert _sgd_lr(before, after, buffers) == pytest.approx(0.01, rel=1e-3)  # not 0.1

    res = Trainer(tiny_config(tmp_path, **FLAT, optim__lr=0.01)).fit(resume="latest")
    assert res.resume_changes == {"optim.lr": (0.1, 0.01)}
    rows = list(csv.reader((Path(cfg.output) / "metrics.csv").open()))[1:]
    assert [float(r[3]) for r in rows] == [0.1] * 3 + [0.01] * 3  # the lr each step used
    final = torch.load(Path(cfg.output) / "checkpoints/step_00000006/rank0.pt", weights_only=True)
    assert final["config"]["optim"]["lr"] == 0.01
    assert {g["lr"] for g in final["optimizer"]["param_groups"]} == {0.01}
    assert final["scheduler"]["base_lrs"] == [0.01, 0.01]
    assert final["history"] == [{"step": 3, "changes": {"optim.lr": ["0.1", "0.01"]}}]


def test_resume_applies_a_new_schedule(tmp_path):
    """Milestones changed on resume: the very next step follows the new schedule."""
    Trainer(tiny_config(tmp_path, **FLAT)).fit(stop_at_step=3)
    over = {**FLAT, "optim__milestones": [1.0]}  # 6 steps over 2 epochs: from step 4 on
    Trainer(tiny_config(tmp_path, **over)).fit(resume="latest")
    rows = list(csv.reader((tmp_path / "out" / "metrics.csv").open()))[1:]
    np.testing.assert_allclose([float(r[3]) for r in rows], [0.1] * 3 + [0.01] * 3)


def test_resume_refuses_settings_that_cannot_change_and_lists_them(tmp_path):
    Trainer(tiny_config(tmp_path, **FLAT)).fit(stop_at_step=2)
    changed = tiny_config(tmp_path, **FLAT, optim__batch_size=4, seed=7)
    with pytest.raises(ConfigError) as err:
        Trainer(changed).fit(resume="latest")
    msg = str(err.value)
    assert "optim.batch_size (8 -> 4)" in msg and "seed (3 -> 7)" in msg
    assert "\n" not in msg
    backbone = tiny_config(tmp_path, **FLAT, backbone={"input_size": 32, "embedding_size": 8})
    with pytest.raises(ConfigError, match=r"backbone\.embedding_size \(16 -> 8\)"):
        Trainer(backbone).fit(resume="latest")


def test_readme_command_resume_latest_with_new_lr(tmp_path, capsys):
    """`npcface train run CONFIG --resume latest --set optim.lr=0.01`, as the README says."""
    from npcface.cli import main

    out = tmp_path / "run"
    args = ["train", "run", str(REPO / "configs/smoke.yaml"), "--output", str(out),
            "--set", "backbone.input_size=32", "--set", "log.every_steps=1",
            "--set", "optim.warmup_epochs=0", "--set", "optim.milestones=[]"]  # fmt: skip
    assert main([*args, "--set", "optim.max_steps=2"]) == 0
    rc = main([*args, "--set", "optim.max_steps=4", "--resume", "latest", "--set", "optim.lr=0.01"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "resumed with changed settings (applied): optim.lr 0.1 -> 0.01" in text
    state = torch.load(out / "checkpoints/step_00000004/rank0.pt", weights_only=True)
    assert state["config"]["optim"]["lr"] == 0.01
    assert {g["lr"] for g in state["optimizer"]["param_groups"]} == {0.01}
    rows = list(csv.reader((out / "metrics.csv").open()))[1:]
    assert [(int(r[0]), float(r[3])) for r in rows] == [(1, 0.1), (2, 0.1), (3, 0.01), (4, 0.01)]


# ----------------------------------------------------------------------------- logs


def test_resume_from_an_older_checkpoint_logs_each_step_once(tmp_path):
    root = _write_lfw_layout(tmp_path / "lfw", 32)
    over = {
        **FLAT,
        "log__checkpoint_every_steps": 2,
        "eval": {"root": str(root), "pairs_file": "pairs.txt", "every_steps": 2},
    }
    full = Trainer(tiny_config(tmp_path, **over)).fit()  # steps 1..6
    out = tmp_path / "out"
    first = list(csv.reader((out / "metrics.csv").open()))
    Trainer(tiny_config(tmp_path, **over)).fit(resume=out / "checkpoints" / "step_00000002")
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == first[0]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    # the replayed steps reproduce the first run's losses (exact resume)
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], [v for _, v in full.losses])
    evals = list(csv.reader((out / "eval.csv").open()))
    assert [int(r[0]) for r in evals[1:]] == [2, 4, 6]


def test_settings_added_since_the_checkpoint_are_not_changes(tmp_path):
    """A checkpoint from before a setting existed resumes without a change to report."""
    cfg = tiny_config(tmp_path, **FLAT)
    Trainer(cfg).fit(stop_at_step=2)
    path = tmp_path / "out" / "checkpoints" / "step_00000002" / "rank0.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["data"]["check_images"], state["config"]["amp"]["max_skipped_steps"]
    state["config"]["optim"]["old_setting"] = 1  # one since removed
    torch.save(state, path)
    res = Trainer(cfg).fit(resume="latest")
    assert res.resume_changes == {} and res.step == 6
