"""Trainer: exact resume, schedule, config/YAML, CLI wiring, verification, 2-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npcface.training.config import (  # noqa: E402
    TrainConfig,
    config_from_dict,
    load_config,
)
from npcface.training.errors import ConfigError  # noqa: E402
from npcface.training.train import Trainer, load_model, lr_factor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(tmp_path: Path, **over) -> TrainConfig:
    data = {
        "name": "tiny",
        "output": str(tmp_path / "out"),
        "seed": 3,
        "backbone": {
            "input_size": 32,
            "embedding_size": 16,
            "kwargs": {"blocks": [1, 1, 1, 1], "width": 0.125, "last_channels": 32},
        },
        "head": {"name": "npcface"},
        "partial_fc": {"sample_rate": 0.5},  # the sampler's generator must resume too
        "data": {
            "dataset": "synthetic",
            "synthetic_classes": 12,
            "synthetic_images": 64,
            "num_workers": 0,
        },
        "optim": {
            "batch_size": 8,
            "epochs": 2,
            "milestones": [1.25],
            "warmup_epochs": 0.25,
        },
        "amp": {"mode": "off"},
        "log": {"every_steps": 1, "tensorboard": False, "keep_checkpoints": 0},
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return config_from_dict(data)


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full = Trainer(tiny_config(tmp_path / "a")).fit()
    assert [s for s, _ in full.losses] == list(range(1, 17))  # 64 / 8 = 8 steps x 2 epochs

    first = Trainer(tiny_config(tmp_path / "b")).fit(stop_at_step=5)  # mid-epoch 0
    assert first.interrupted and first.step == 5
    # a fresh process-like trainer, other seed-dependent init, loading with 2 workers
    resumed_cfg = tiny_config(tmp_path / "b", data__num_workers=2)
    second = Trainer(resumed_cfg).fit(resume=first.checkpoint)
    got = first.losses + second.losses
    assert [s for s, _ in got] == list(range(1, 17))
    np.testing.assert_array_equal([v for _, v in got], [v for _, v in full.losses])
    # the lr schedule went through warm-up and the milestone in both
    metrics = (tmp_path / "b" / "out" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 16  # header + every step, appended after the resume
    lrs = [float(line.split(",")[3]) for line in metrics[1:]]
    assert lrs[0] < lrs[3] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01)

    # the checkpoint holds plain, weights_only-loadable state
    state = torch.load(Path(first.checkpoint) / "rank0.pt", weights_only=True)
    assert state["step"] == 5 and state["sampler"] == {"epoch": 0, "start": 0, "seed": 3}
    assert "sampler_generator" in state["partial_fc"]["_extra_state"]
    # the exported model rebuilds and embeds
    model = load_model(tmp_path / "b" / "out" / "model.pt")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 16)


def test_resume_from_latest_and_world_size_check(tmp_path):
    cfg = tiny_config(tmp_path, optim__max_steps=6, log__checkpoint_every_steps=2)
    t = Trainer(cfg)
    t.fit(stop_at_step=4)
    t2 = Trainer(cfg)
    res = t2.fit(resume="latest")
    assert [s for s, _ in res.losses] == [5, 6]
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000002", "step_00000004", "step_00000006"]
    state = torch.load(tmp_path / "out/checkpoints/step_00000004/rank0.pt", weights_only=True)
    state["world_size"] = 2
    torch.save(state, tmp_path / "bad.pt")
    from npcface.training.errors import TrainingError

    with pytest.raises(TrainingError, match="same number"):
        Trainer(cfg).load_checkpoint(tmp_path / "bad.pt")


def test_lr_schedule_is_the_papers():
    # CASIA: lr 0.1, / 10 at epochs 16, 24, 28; with 100 steps per epoch
    ms = [1600, 2400, 2800]
    lr = [0.1 * lr_factor(s, 3000, ms, 0.1, 0) for s in (0, 1599, 1600, 2399, 2400, 2800, 2999)]
    np.testing.assert_allclose(lr, [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001])
    warm = [lr_factor(s, 3000, ms, 0.1, 10) for s in (0, 4, 9, 10)]
    np.testing.assert_allclose(warm, [0.1, 0.5, 1.0, 1.0])


def test_yaml_base_chain_overrides_and_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.2, milestones: [2, 3]}\nseed: 5\n")
    (tmp_path / "b.yaml").write_text(
        "base: a.yaml\nname: job\noptim: {lr: 0.3}\nhead: {name: arcface, params: {s: 30}}\n"
    )
    cfg = load_config(tmp_path / "b.yaml", ["optim.batch_size=64", "head.params.m=0.45"])
    assert cfg.optim.lr == 0.3 and cfg.optim.milestones == [2.0, 3.0] and cfg.seed == 5
    assert cfg.optim.batch_size == 64 and cfg.head.params == {"s": 30, "m": 0.45}
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4  # paper defaults
    assert cfg.output == str(Path("work_dirs") / "b")
    (tmp_path / "c.yaml").write_text("optim: {learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("optim: {batch_size: 'big'}\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("base: e.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "e.yaml")
    with pytest.raises(ConfigError, match="milestones"):
        config_from_dict({"optim": {"milestones": [3, 2]}})
    with pytest.raises(ConfigError, match="data.root"):
        Trainer(config_from_dict({"data": {"dataset": "folder"}}))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.backbone.input_size in (48, 112, 120)
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9


def test_cli_module_does_not_import_torch_and_reports_missing_torch(monkeypatch):
    code = (
        "import sys, argparse; import npcface.training.cli as c; "
        "p = argparse.ArgumentParser(); c.register(p.add_subparsers()); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)

    import importlib.util

    from npcface.cli import main
    from npcface.errors import MissingExtraError
    from npcface.training import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    import argparse

    with pytest.raises(MissingExtraError, match=r"npcface\[train\]"):
        cli._cmd_run(argparse.Namespace(config="x.yaml", resume=None, set=[], output=None))
    assert main(["train", "run", "x.yaml"]) == 2


def test_cli_run_smoke(tmp_path, capsys):
    from npcface.cli import main

    out = tmp_path / "smoke"
    rc = main(
        ["train", "run", str(REPO / "configs/smoke.yaml"), "--output", str(out), "--set",
         "optim.max_steps=3", "--set", "backbone.input_size=32"]
    )  # fmt: skip
    assert rc == 0
    assert "trained to step 3" in capsys.readouterr().out
    assert (out / "model.pt").is_file() and (out / "metrics.csv").is_file()
    assert main(["train", "run", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_cli_run_prints_progress_lines_at_default_verbosity(tmp_path):
    """Not on a terminal (here: a pipe), `npcface train run` prints a progress line every
    log.every_steps steps with step, loss, lr, images/s and the time left, without -v; the
    losses printed are the ones metrics.csv records."""
    import csv

    out = tmp_path / "smoke"
    proc = subprocess.run(
        [sys.executable, "-m", "npcface.cli", "train", "run", str(REPO / "configs/smoke.yaml"),
         "--output", str(out), "--set", "optim.max_steps=12", "--set", "log.every_steps=4",
         "--set", "backbone.input_size=32"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if " step " in f" {x}" and "ETA" in x]
    assert [int(x.split("step ")[1].split("/")[0]) for x in lines] == [4, 8, 12]
    for x in lines:
        for field in ("/12 epoch", " loss ", " lr ", " img/s ", " ETA "):
            assert field in x, x
    assert lines[-1].endswith("ETA 0:00")  # nothing left at the last step
    with open(out / "metrics.csv", newline="") as fh:
        logged = [float(r["loss"]) for r in csv.DictReader(fh)]
    printed = [float(x.split(" loss ")[1].split()[0]) for x in lines]
    assert printed == pytest.approx(logged, abs=1e-4)
    quiet = subprocess.run(
        [sys.executable, "-m", "npcface.cli", "train", "run", str(REPO / "configs/smoke.yaml"),
         "--output", str(tmp_path / "q"), "--set", "optim.max_steps=2", "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert quiet.returncode == 0 and "ETA" not in quiet.stderr


# ----------------------------------------------------------------------------- verification


def _write_lfw_layout(root: Path, size: int, people: int = 4, per: int = 2) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for p in range(people):
        name = f"Person_{p}"
        (root / "images" / name).mkdir(parents=True)
        for k in range(1, per + 1):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "images" / name / f"{name}_{k:04d}.jpg"), img)
    lines = ["2 2"]
    for fold in range(2):
        a, b = 2 * fold, 2 * fold + 1
        lines += [f"Person_{a} 1 2", f"Person_{b} 1 2"]
        lines += [f"Person_{a} 1 Person_{b} 2", f"Person_{b} 1 Person_{a} 2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_pair_verifier_scores_are_cosines_of_the_model(tmp_path):
    import cv2

    from npcface.training.backbones import get_backbone
    from npcface.training.config import EvalConfig
    from npcface.training.verify import PairVerifier

    root = _write_lfw_layout(tmp_path / "lfw", 32)
    (root / "images/Person_3/Person_3_0002.jpg").unlink()  # a missing crop skips its pairs
    ver = PairVerifier(EvalConfig(root=str(root), pairs_file="pairs.txt"), 32)
    assert ver.skipped == 2 and len(ver.labels) == 6
    torch.manual_seed(0)
    model = get_backbone("mobilefacenet", 32, 16, blocks=(1, 1, 1, 1), width=0.125).eval()

    def emb(path):
        img = cv2.imread(str(path))[:, :, ::-1].astype(np.float32)
        x = torch.from_numpy((img - 127.5) / 128.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            e = model(x) + model(x.flip(3))
        return (e / e.norm()).numpy()[0]

    scores = ver.scores(model, flip_fusion=True)
    want = []
    for line in (root / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split()
        n1, i1, n2, i2 = (f[0], f[1], f[0], f[2]) if len(f) == 3 else f
        p1 = root / "images" / n1 / f"{n1}_{int(i1):04d}.jpg"
        p2 = root / "images" / n2 / f"{n2}_{int(i2):04d}.jpg"
        if p1.is_file() and p2.is_file():
            want.append(float(emb(p1) @ emb(p2)))
    np.testing.assert_allclose(scores, want, atol=1e-4)
    res = ver(model)
    assert 0.0 <= res.accuracy <= 1.0 and res.num_pairs == 6 and res.skipped_pairs == 2


def test_trainer_runs_verification(tmp_path):
    root = _write_lfw_layout(tmp_path / "lfw", 32)
    cfg = tiny_config(
        tmp_path,
        optim__max_steps=4,
        eval={"root": str(root), "pairs_file": "pairs.txt", "every_steps": 2},
    )
    res = Trainer(cfg).fit()
    assert res.verification is not None and res.verification.num_pairs == 8
    rows = (tmp_path / "out" / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]


# ----------------------------------------------------------------------------- 2 processes


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    cfg = tiny_config(Path(out), optim__max_steps=3, optim__batch_size=4)
    trainer = Trainer(cfg)
    try:
        res = trainer.fit()
        torch.save(
            {
                "losses": torch.tensor([v for _, v in res.losses]),
                "shard": trainer.pfc.num_local,
                "epoch": trainer.sampler.epoch,
            },
            Path(out) / f"result{rank}.pt",
        )
    finally:
        trainer.close()


@pytest.mark.slow
def test_two_process_trainer(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(2))
    torch.testing.assert_close(r0["losses"], r1["losses"])  # one global loss
    assert torch.isfinite(r0["losses"]).all() and len(r0["losses"]) == 3
    assert r0["shard"] + r1["shard"] == 12  # centres split over the two ranks
    ckpt = tmp_path / "out" / "checkpoints"
    assert {p.name for p in next(ckpt.glob("step_*")).iterdir()} == {"rank0.pt", "rank1.pt"}


def test_gradient_clipping_rescales_the_backbone_gradient(tmp_path):
    """clip_grad_norm semantics: g * clip / ||g|| when ||g|| > clip, over all backbone grads."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 12, (8,), generator=gen)

    def grads(clip: float) -> list[torch.Tensor]:
        t = Trainer(tiny_config(tmp_path / str(clip), optim__grad_clip_norm=clip))
        t._train_step(images, labels)
        return [p.grad.clone() for p in t.backbone.parameters() if p.grad is not None]

    raw, clipped = grads(0.0), grads(1e-3)
    raw_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in raw])).item()
    assert raw_norm > 1e-2  # clipping has something to do
    clipped_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in clipped])).item()
    assert clipped_norm == pytest.approx(1e-3, rel=1e-3)
    for r, c in zip(raw, clipped, strict=True):
        torch.testing.assert_close(c, r * (1e-3 / raw_norm), rtol=1e-3, atol=1e-9)


def test_tensorboard_scalars_match_the_csv_log(tmp_path):
    """The TensorBoard event file holds the same per-step losses as metrics.csv."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    cfg = tiny_config(tmp_path, optim__max_steps=4, log__tensorboard=True)
    res = Trainer(cfg).fit()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "train/images_per_s"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [s for s, _ in res.losses] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in events], [v for _, v in res.losses], rtol=1e-6)


def test_bf16_autocast_runs_the_backbone_in_bf16_and_the_head_in_fp32(tmp_path):
    t = Trainer(tiny_config(tmp_path, amp__mode="bf16"))
    assert t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    x = torch.randn(4, 3, 32, 32)
    with t._autocast():
        emb = t.model(x)
        logits = t.pfc.margin_loss(
            torch.nn.functional.linear(emb, t.pfc.weight).clamp(-1, 1), torch.arange(4)
        )
    assert emb.dtype == torch.bfloat16
    assert logits.dtype == torch.float32
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=gen)
    loss = t._train_step(images, torch.randint(0, 12, (8,), generator=gen))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path):
    """`torchrun --nproc-per-node 2 -m npcface.cli train run CONFIG`: gloo on CPU, one
    checkpoint file per rank, a metrics log from rank 0 and a loadable model."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(port), "-m", "npcface.cli", "train", "run",
        str(REPO / "configs" / "smoke.yaml"),
        "--set", "optim.max_steps=4", "--set", f"output={out}", "--set", "threads=1",
        "--set", "log.every_steps=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained to step 4" in proc.stdout
    ranks = {p.name for p in (out / "checkpoints" / "step_00000004").iterdir()}
    assert ranks == {"rank0.pt", "rank1.pt"}
    shards = [
        torch.load(out / "checkpoints" / "step_00000004" / r, weights_only=True)["partial_fc"]
        for r in sorted(ranks)
    ]
    assert sum(s["weight"].shape[0] for s in shards) == 16  # the centres, split over 2 ranks
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]
    assert load_model(out / "model.pt")(torch.zeros(1, 3, 48, 48)).shape == (1, 64)
