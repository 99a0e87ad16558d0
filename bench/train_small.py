"""A real, small training run on CPU: NPCFace vs ArcFace, MobileFaceNet at 120x120, LFW.

    python bench/train_small.py --minutes 40            # the real run (~1 h 25 min in all)
    python bench/train_small.py --smoke                 # a ~3-minute end-to-end check
    python bench/train_small.py --speed-study           # what makes CPU training faster

1. Prepare (resumable; a re-run reuses the crops): CelebA subset and LAG are detected and
   aligned to 120x120 with the SDK's detector and aligner (several faces: the largest is
   kept); the LFW images that ``pairs.txt`` uses are aligned the same way (several faces:
   the most central; no face: the mean landmarks of the detected faces, so every pair
   counts). LAG identities whose name is also an LFW name are left out of training
   (CelebA identities are anonymous ids and cannot be checked).
2. Train MobileFaceNet (512-d, 120x120) with NPCFace, then with ArcFace (s=32, m=0.4: the
   NPCFace base margin and scale, so only NPCFace's additions differ), same seed, same data
   order, same number of steps. The step count is set from the NPCFace run's measured
   throughput after a few steps so that it trains for about ``--minutes``; the paper's
   schedule (SGD 0.1, momentum 0.9, wd 5e-4, lr / 10 at 16/30, 24/30, 28/30 of the run) is
   compressed to that length, after a warm-up of 1/30 of it.
3. Evaluate both on LFW ``pairs.txt`` (10-fold accuracy, flip-fused embeddings), print the
   loss curves (and save them as a PNG), accuracy and training images/s of each, and write
   ``summary.json``.

Speed: channels-last memory, bf16 autocast on CPUs with native bf16 (the heads stay
float32), torch.compile of the backbone, crops decoded once into RAM with a loader worker
that only flips and batches, and OMP_WAIT_POLICY=PASSIVE (on a shared machine, spinning
OpenMP threads stall when a core is taken). ``--speed-study`` measures each option.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEADS = {
    "npcface": {},  # paper defaults: s=32, m0=0.4, m1=0.2, t=1.1, alpha=0.25
    "arcface": {"s": 32.0, "m": 0.4},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument(
        "--out", type=Path, default=REPO.parent / "npcface_runs" / "train_small",
        help="crops, runs and figures (outside the repository by default)",
    )  # fmt: skip
    p.add_argument("--minutes", type=float, default=40.0, help="training budget per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--workers", type=int, default=2, help="prepare worker processes")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True,
        help="torch.compile the backbone (default on; compiled graphs are cached on disk)",
    )  # fmt: skip
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16"))
    p.add_argument("--heads", default="npcface,arcface", help="comma-separated")
    p.add_argument("--smoke", action="store_true", help="tiny data and budget (~2 min)")
    p.add_argument("--speed-study", action="store_true", help="time the speed options")
    p.add_argument("--steps", type=int, default=0, help="fixed step count (skips calibration)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data


def lfw_subset(lfw: Path, per_fold: int) -> tuple[str, set[str]]:
    """A pairs file with the first ``per_fold`` matched and mismatched pairs of each fold."""
    lines = (lfw / "pairs.txt").read_text().split("\n")
    folds, n = (int(v) for v in lines[0].split())
    body = [line for line in lines[1:] if line.strip()]
    keep = []
    for f in range(folds):
        block = body[f * 2 * n : (f + 1) * 2 * n]
        keep += block[:per_fold] + block[n : n + per_fold]
    return _pairs_images(f"{folds} {per_fold}", keep)


def _pairs_images(header: str, lines: list[str]) -> tuple[str, set[str]]:
    used = set()
    for line in lines:
        f = line.split()
        pairs = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        for name, num in pairs:
            used.add(f"{name}/{name}_{int(num):04d}.jpg")
    return "\n".join([header, *lines]) + "\n", used


def prepare_all(args, out: Path, log: logging.Logger) -> dict:
    from npcface.training.data import write_list_file
    from npcface.training.data.prepare import list_raw_images, prepare_dataset

    prepared = out / "prepared"
    limit = 400 if args.smoke else None
    reports = {}
    for name in ("celeba-subset", "lag"):
        t = time.perf_counter()
        rep = prepare_dataset(
            args.data / name, prepared / name, size=120, workers=args.workers,
            multiple="largest", progress=sys.stderr.isatty(), limit=limit,
        )  # fmt: skip
        reports[name] = rep
        log.info("%s (%.0f s)", rep.summary(), time.perf_counter() - t)

    lfw = args.data / "lfw"
    if args.smoke:
        text, used = lfw_subset(lfw, 15)
    else:
        text = (lfw / "pairs.txt").read_text()
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        _, used = _pairs_images(text.splitlines()[0], lines)
    pairs_file = prepared / "lfw_pairs.txt"
    pairs_file.write_text(text)
    t = time.perf_counter()
    rep = prepare_dataset(
        lfw / "images", prepared / "lfw" / "images", size=120, workers=args.workers,
        multiple="center", no_face="mean", progress=sys.stderr.isatty(), only=used,
    )  # fmt: skip
    reports["lfw"] = rep
    log.info("%s (%.0f s)", rep.summary(), time.perf_counter() - t)

    # training list: CelebA ids then LAG names, minus LAG identities that are LFW people
    lfw_names = {p.name.lower() for p in (lfw / "images").iterdir() if p.is_dir()}
    items, label, excluded = [], 0, []
    for name in ("celeba-subset", "lag"):
        root = prepared / name
        by_id: dict[str, list[str]] = {}
        for rel in list_raw_images(root):
            by_id.setdefault(rel.split("/", 1)[0], []).append(rel)
        for ident in sorted(by_id):
            if name == "lag" and ident.lower() in lfw_names:
                excluded.append(ident)
                continue
            items += [(root / rel, label) for rel in by_id[ident]]
            label += 1
    write_list_file(out / "train_list.txt", items)
    log.info(
        "training set: %d crops, %d identities (%d LAG identities left out: also in LFW)",
        len(items), label, len(excluded),
    )  # fmt: skip
    return {
        "reports": {k: v.to_dict() for k, v in reports.items()},
        "train_images": len(items),
        "train_identities": label,
        "lfw_overlap_excluded": excluded,
        "pairs_file": str(pairs_file),
        "lfw_root": str(prepared / "lfw"),
    }


# ----------------------------------------------------------------------------- training


def make_config(args, out: Path, head: str, data: dict, run_dir: Path | None = None, **over):
    from npcface.training.config import config_from_dict

    cfg = {
        "name": head,
        "output": str(run_dir or out / "runs" / head),
        "seed": args.seed,
        "threads": args.threads,
        "backbone": {"name": "mobilefacenet", "input_size": 120, "embedding_size": 512,
                     "channels_last": True, "compile": args.compile},
        "head": {"name": head, "params": HEADS[head]},
        "data": {"dataset": "list", "list_file": str(out / "train_list.txt"),
                 "num_workers": 1, "cache_in_memory": True},
        "optim": {"batch_size": args.batch_size, "warmup_epochs": 1.0, "max_steps": 10**9},
        "amp": {"mode": args.amp},
        "eval": {"root": data["lfw_root"], "pairs_file": data["pairs_file"], "every_steps": 0},
        "log": {"every_steps": 10, "checkpoint_every_steps": 0, "keep_checkpoints": 1},
    }  # fmt: skip
    for key, value in over.items():
        section, _, name = key.partition("__")
        cfg[section][name] = value
    return config_from_dict(cfg)


def calibrate(args, out, data, log, steps: int) -> int:
    """Steps that fill ``--minutes``, from a short throw-away NPCFace run's throughput."""
    from npcface.training.train import Trainer

    cfg = make_config(args, out, "npcface", data, run_dir=out / "runs" / "calibration")
    cfg.eval.root = ""
    cfg.log.tensorboard = False
    trainer = Trainer(cfg)
    trainer.set_total_steps(steps)
    res = trainer.fit()
    total = max(10, int(args.minutes * 60 * res.images_per_second / args.batch_size))
    log.info(
        "calibration: %.1f images/s over %d steps -> %d steps for %.1f min per method",
        res.images_per_second, steps, total, args.minutes,
    )  # fmt: skip
    return total


def run_head(args, out, head, data, steps, log):
    """Train one head for ``steps`` steps and verify on LFW."""
    from npcface.training.train import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(make_config(args, out, head, data))
    trainer.set_total_steps(steps)
    res = trainer.fit()
    wall = time.perf_counter() - t0
    v = res.verification
    log.info(
        "%s: %d steps in %.1f min, %.1f images/s, LFW %.2f%% +- %.2f",
        head, res.step, wall / 60, res.images_per_second, 100 * v.accuracy, 100 * v.std,
    )  # fmt: skip
    return {
        "head": head,
        "params": HEADS[head],
        "steps": res.step,
        "wall_minutes": wall / 60,
        "images_per_second": res.images_per_second,
        "data_wait_fraction": res.data_wait_fraction,
        "lfw_accuracy": v.accuracy,
        "lfw_std": v.std,
        "lfw_pairs": v.num_pairs,
        "lfw_skipped_pairs": v.skipped_pairs,
        "losses": res.losses,
    }


def plot_losses(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        steps, loss = np.array(r["losses"]).T
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        label = f"{r['head']} (LFW {100 * r['lfw_accuracy']:.2f}%)"
        ax.plot(steps[k - 1 :], smooth, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving mean of {k})")
    ax.set_title("MobileFaceNet 120x120 on CelebA-subset + LAG (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_curves(results: list[dict]) -> None:
    import numpy as np

    print("\nloss curves (mean over each tenth of the run):")
    print("  step      " + "  ".join(f"{r['head']:>9s}" for r in results))
    arrays = [np.array(r["losses"]) for r in results]
    n = min(len(a) for a in arrays)
    for i in range(10):
        lo, hi = i * n // 10, max((i + 1) * n // 10, i * n // 10 + 1)
        row = "  ".join(f"{a[lo:hi, 1].mean():9.3f}" for a in arrays)
        print(f"  {int(arrays[0][hi - 1, 0]):6d}    {row}")


# ----------------------------------------------------------------------------- speed study


def speed_study(args, out: Path, data: dict, log: logging.Logger) -> list[dict]:
    """Images/s of one training step (MobileFaceNet 120x120 + Partial FC NPCFace + SGD)
    under each speed option. Variants run interleaved, one step each per round, so that
    load from other processes on a shared machine hits them alike; the median counts."""
    import statistics

    import torch

    from npcface.training.backbones import get_backbone
    from npcface.training.heads import get_head
    from npcface.training.partial_fc import PartialFC

    variants = {
        "plain: fp32, NCHW": dict(cl=False, bf16=False, compile=False),
        "channels_last": dict(cl=True, bf16=False, compile=False),
        "bf16 autocast": dict(cl=False, bf16=True, compile=False),
        "channels_last + bf16": dict(cl=True, bf16=True, compile=False),
        "channels_last + bf16 + compile": dict(cl=True, bf16=True, compile=True),
    }
    b = args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, 120, 120, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, data["train_identities"], (b,), generator=g)
    steps = {}
    for name, v in variants.items():
        torch.manual_seed(0)
        net = get_backbone("mobilefacenet", 120, 512)
        if v["cl"]:
            net = net.to(memory_format=torch.channels_last)
        model = torch.compile(net) if v["compile"] else net
        pfc = PartialFC(get_head("npcface"), 512, data["train_identities"])
        opt = torch.optim.SGD([*net.parameters(), *pfc.parameters()], lr=0.01, momentum=0.9)

        def step(model=model, pfc=pfc, opt=opt, v=v):
            x = images.permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0)
            if not v["cl"]:
                x = x.contiguous()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"]):
                emb = model(x)
            loss = pfc(emb.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = time.perf_counter()
        for _ in range(2):  # warm-up (and compilation)
            step()
        log.info("%s: warm-up %.0f s", name, time.perf_counter() - t)
        steps[name] = step
    rounds = 3 if args.smoke else 8
    times: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
        log.info("round %d/%d done", r + 1, rounds)
    rows = []
    base = b / statistics.median(times["plain: fp32, NCHW"])
    for name, ts in times.items():
        ips = b / statistics.median(ts)
        rows.append({"variant": name, "images_per_second": ips, "speedup": ips / base})
    return rows


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("train_small")
    if args.smoke:
        args.minutes = min(args.minutes, 0.5)
        args.batch_size = min(args.batch_size, 32)
        args.compile = False  # compiling would dominate a 2-minute check
    import torch

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = prepare_all(args, out, log)
    prep_minutes = (time.perf_counter() - t_start) / 60

    if args.speed_study:
        rows = speed_study(args, out, data, log)
        (out / "speed_study.json").write_text(json.dumps(rows, indent=1))
        print(f"\nspeed study (MobileFaceNet 120x120 + NPCFace, batch {args.batch_size}, "
              f"{args.threads} threads, median step):")  # fmt: skip
        for r in rows:
            print(f"  {r['variant']:32s} {r['images_per_second']:6.1f} images/s  "
                  f"x{r['speedup']:.2f}")  # fmt: skip
        return 0

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    steps = args.steps or calibrate(args, out, data, log, 6 if args.smoke else 25)
    results = [run_head(args, out, head, data, steps, log) for head in heads]

    plot_losses(results, out / "loss_curves.png")
    summary = {
        "command": " ".join([sys.executable, *sys.argv]),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "minutes_budget_per_method": args.minutes,
        "steps_per_method": steps,
        "prepare_minutes": prep_minutes,
        "total_minutes": (time.perf_counter() - t_start) / 60,
        "data": {k: v for k, v in data.items() if k != "reports"},
        "prepare": {
            k: {f: v[f] for f in ("total", "written", "no_face", "multiple", "errors", "fallback")}
            for k, v in data["reports"].items()
        },
        "results": [{k: v for k, v in r.items() if k != "losses"} for r in results],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "losses.json").write_text(json.dumps({r["head"]: r["losses"] for r in results}))

    print_curves(results)
    print(f"\nprepare ({prep_minutes:.1f} min):")
    for k, v in summary["prepare"].items():
        print(f"  {k:14s} {v['total']:6d} photos, {v['written']:6d} crops, no face {v['no_face']},"
              f" several faces {v['multiple']}, unreadable {v['errors']}, mean-aligned {v['fallback']}")  # fmt: skip
    print(f"training set: {data['train_images']} crops of {data['train_identities']} identities")
    print(f"\n{'head':10s} {'steps':>6s} {'min':>6s} {'img/s':>7s} {'LFW acc':>14s}")
    for r in results:
        print(f"{r['head']:10s} {r['steps']:6d} {r['wall_minutes']:6.1f} {r['images_per_second']:7.1f}"
              f" {100 * r['lfw_accuracy']:6.2f} +- {100 * r['lfw_std']:4.2f}%"
              f"  ({r['lfw_pairs']} pairs)")  # fmt: skip
    print(f"\nloss curves: {out / 'loss_curves.png'}; summary: {out / 'summary.json'}")
    print(f"total {summary['total_minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
