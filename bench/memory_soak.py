"""Soak: does a long-running recogniser's memory depend on how many photo sizes it has seen?

One :class:`~npcface.FaceRecognizer` is fed ``--count`` photos of random sizes (from 200 x 200
to 12 MP, log-uniform in pixels, aspect ratio 1:2 to 2:1), each an LFW photo resized to that
size (so every photo has a real face to detect, align and embed), and the process's resident
memory (RSS) is printed every ``--every`` photos with the number of distinct photo sizes
seen so far. Steady state means RSS flat after warm-up while the distinct sizes keep growing.

    nice -n 5 python bench/memory_soak.py --count 2000            # the default pipeline
    nice -n 5 python bench/memory_soak.py --count 200 --max-side none   # detect at full size

Linux only (reads /proc/self/status). Needs LFW (``$NPCFACE_DATA/lfw``, default
../shared/data/lfw).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from npcface import FaceRecognizer
from npcface.errors import NpcfaceError
from npcface.image import load_image

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): pixels log-uniform in [200*200, 12e6], aspect in [1/2, 2]."""
    pixels = float(np.exp(rng.uniform(np.log(200 * 200), np.log(12e6))))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    w = max(200, round((pixels * aspect) ** 0.5))
    h = max(200, round(pixels / w))
    return w, h


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=2000, help="photos to feed")
    p.add_argument("--every", type=int, default=200, help="report RSS every this many photos")
    p.add_argument("--max-side", default="default", help="detector max_side: an int, 'none'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="threads per model")
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("NPCFACE_DATA", REPO.parent / "shared" / "data")) / "lfw",
    )
    args = p.parse_args()
    folder = args.data / "images"
    if not folder.is_dir():
        print(f"LFW not found at {args.data} (set NPCFACE_DATA)", file=sys.stderr)
        return 2
    sources = sorted(folder.glob("*/*_0001.jpg"))[:200]
    rng = np.random.default_rng(args.seed)
    photos = [load_image(s) for s in sources]
    if args.max_side == "default":
        opts = {}
    elif args.max_side == "none":
        opts = {"max_side": None}
    else:
        opts = {"max_side": int(args.max_side)}
    rec = FaceRecognizer(detector_options=opts, threads=args.threads)
    rec.represent(photos[0])  # load the models before the first reading
    print(f"models loaded: rss {rss_mb():.0f} MiB; max_side {args.max_side}", flush=True)
    print(f"{'photos':>7} {'rss MiB':>8} {'sizes seen':>10} {'no face':>7} {'s/photo':>8}")
    sizes: set[tuple[int, int]] = set()
    readings: list[tuple[int, float]] = []
    misses = 0
    t0 = time.perf_counter()
    for i in range(1, args.count + 1):
        w, h = random_size(rng)
        sizes.add((w, h))
        src = photos[int(rng.integers(len(photos)))]
        img = cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
        try:
            rec.represent(img)
        except NpcfaceError:
            misses += 1
        del img
        if i % args.every == 0 or i == args.count:
            rss = rss_mb()
            readings.append((i, rss))
            rate = (time.perf_counter() - t0) / i
            print(f"{i:7d} {rss:8.0f} {len(sizes):10d} {misses:7d} {rate:8.3f}", flush=True)
    if len(readings) >= 3:
        warm = readings[1][1]  # after the first report: arenas and caches at their working size
        later = [r for _, r in readings[1:]]
        print(
            f"after warm-up ({readings[1][0]} photos): rss {warm:.0f} MiB; later readings "
            f"{min(later):.0f}..{max(later):.0f} MiB (max - warm-up = {max(later) - warm:+.0f} "
            f"MiB) while distinct sizes grew to {len(sizes)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
