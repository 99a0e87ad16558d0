"""Step-time overhead of the NPCFace head over ArcFace (FC + head + cross-entropy, fwd + bwd).

    python bench/head_overhead.py                      # 10k classes, 512-d, batch 128
    python bench/head_overhead.py --classes 100000 --threads 2

A step is what Partial FC does per batch with one shard and sample rate 1: normalise the
embeddings and the class centres, cosine matmul, head, softmax cross-entropy, backward to
the embeddings and centres. The figure of merit is the ratio of median step times
(target <= 1.15x at 10k classes). The head alone (cosines given, no matmul) is also timed.
Methods are interleaved round by round so that load from other processes hits both alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machines: no spin-waiting

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from npcface.training.heads import get_head  # noqa: E402

HEADS = {"arcface": {"s": 32.0, "m": 0.4}, "npcface": {}}


def make_step(name: str, emb: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, full: bool):
    head = get_head(name, **HEADS[name])
    cos0 = F.linear(F.normalize(emb), F.normalize(weight)).detach()

    def step() -> None:
        if full:
            e = emb.detach().requires_grad_(True)
            w = weight.detach().requires_grad_(True)
            cos = F.linear(F.normalize(e), F.normalize(w)).clamp(-1, 1)
        else:
            cos = cos0.clone().requires_grad_(True)
        loss = F.cross_entropy(head(cos, labels), labels)
        loss.backward()

    return step


def bench(args: argparse.Namespace, full: bool) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(args.batch, args.dim, generator=g)
    weight = torch.randn(args.classes, args.dim, generator=g) * 0.01
    labels = torch.randint(0, args.classes, (args.batch,), generator=g)
    # a trained-like regime: positives at cos ~0.5, so the mask has hard negatives
    weight[labels] = F.normalize(emb, dim=1) * 0.01 + weight[labels]
    steps = {n: make_step(n, emb, weight, labels, full) for n in HEADS}
    times: dict[str, list[float]] = {n: [] for n in HEADS}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    for _ in range(args.reps):
        for n, s in steps.items():
            t = time.perf_counter()
            s()
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{args.classes} classes, {args.dim}-d, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, median of {args.reps}"
    )
    for full, what in ((True, "FC + head + CE, fwd+bwd"), (False, "head + CE only, fwd+bwd")):
        t = bench(args, full)
        ratio = t["npcface"] / t["arcface"]
        print(
            f"{what:26s} arcface {1e3 * t['arcface']:7.2f} ms   npcface {1e3 * t['npcface']:7.2f} ms"
            f"   ratio {ratio:.3f}x"
        )


if __name__ == "__main__":
    main()
