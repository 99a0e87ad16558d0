"""What concurrency buys: embeddings/s of ONE shared FaceRecognizer at 1, 2 and 4 threads.

Every engine is already multi-threaded inside one call, so on a small CPU more caller
threads mostly take turns; this measures it instead of guessing. The thread counts are
timed in interleaved rounds (1, 2, 4, 1, 2, 4, ...) so that machine load hits all alike, and
reported as ratios against 1 thread measured in the same run.

    python bench/threads.py --data ../shared/data/lfw --photos 200 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from npcface import FaceRecognizer
from npcface.image import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw", help="LFW folder")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino", "opencv"])
    args = ap.parse_args()

    paths = sorted(Path(args.data, "images").glob("*/*.jpg"))
    idx = np.linspace(0, len(paths) - 1, args.photos).round().astype(int)
    images = [load_image(paths[i]) for i in idx]  # decoded once: time the pipeline only
    print(f"{len(images)} LFW photos, {args.rounds} interleaved rounds, whole pipeline per call")
    print(f"{'backend':<12} {'threads':>7} {'embeds/s':>9} {'vs 1 thread':>12}")
    for backend in args.backends:
        rec = FaceRecognizer(backend=backend, face_policy="center")
        rec.embed(images[0])  # load and warm up
        best = dict.fromkeys(args.threads, 0.0)
        for _ in range(args.rounds):
            for n in args.threads:
                with ThreadPoolExecutor(n) as pool:
                    t0 = time.perf_counter()
                    list(pool.map(rec.embed, images))
                    best[n] = max(best[n], len(images) / (time.perf_counter() - t0))
        for n in args.threads:
            print(f"{backend:<12} {n:>7} {best[n]:9.1f} {best[n] / best[args.threads[0]]:11.2f}x")


if __name__ == "__main__":
    main()
