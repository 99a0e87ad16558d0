"""Step-time cost of the trainer's per-step NaN/inf check (loss, gradients, BN statistics).

    python bench/finite_check_overhead.py                  # MobileFaceNet 120x120, batch 64
    python bench/finite_check_overhead.py --backbone iresnet50 --batch 32 --threads 2

One trainer, synthetic data, the same batch; training steps with the check and with it
replaced by a no-op are interleaved round by round (so load from other processes hits both
alike) and the ratio of median step times is printed. The check is one fused max-abs norm
per kind of tensor and one host sync per step.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machines: no spin-waiting

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from npcface.training.config import config_from_dict  # noqa: E402
from npcface.training.train import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="mobilefacenet")
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = config_from_dict(
            {
                "output": out,
                "backbone": {"name": args.backbone, "input_size": args.size},
                "data": {
                    "dataset": "synthetic",
                    "synthetic_classes": args.classes,
                    "synthetic_images": args.batch * 2,
                    "num_workers": 0,
                },
                "optim": {"batch_size": args.batch, "max_steps": 1000},
                "amp": {"mode": "off"},
                "log": {"tensorboard": False},
            }
        )
        t = Trainer(cfg)
        images, labels = next(iter(t.loader))
        real = t._check_finite

        def step(check: bool) -> float:
            t._check_finite = real if check else (lambda loss: None)
            t0 = time.perf_counter()
            t._train_step(images, labels)
            return time.perf_counter() - t0

        for check in (True, False):  # warm-up
            step(check)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for check in (True, False) if r % 2 == 0 else (False, True):
                times[check].append(step(check))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"{args.backbone} {args.size}px batch {args.batch}, {args.threads} threads, "
        f"{args.rounds} interleaved rounds: step with check {1000 * on:.1f} ms, without "
        f"{1000 * off:.1f} ms, ratio {on / off:.3f}x"
    )


if __name__ == "__main__":
    main()
