"""SFace fp32 vs the INT8 recogniser (``sface-int8``) on each CPU engine: speed and agreement.

    python bench/int8_recognizer.py --data ../shared/data/lfw [--photos 300] [--rounds 30]

Aligned crops of real LFW photos (the ``fast`` preset's crops of every k-th pairs.txt photo)
go through the fp32 and INT8 files on ONNX Runtime, OpenVINO and OpenCV DNN. Prints the
cosine of each INT8 embedding to the fp32 one (min, 1st percentile, mean), and ms per crop
at batch 1, 2 (one face with flip fusion) and 32, timed round-robin so that load on the
machine hits all alike, as ratios to fp32 on OpenCV DNN (what OpenCV's own pipeline runs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from npcface import FaceRecognizer
from npcface.embed import Embedder
from npcface.eval import read_lfw_pairs
from npcface.models import resolve_model_file
from npcface.runtime import OpenCVRunner, OpenVINORunner, OrtRunner

ENGINES = {"onnxruntime": OrtRunner, "openvino": OpenVINORunner, "opencv": OpenCVRunner}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()

    pairs = read_lfw_pairs(args.data)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    paths = paths[:: max(1, len(paths) // args.photos)][: args.photos]
    crops = np.stack([r.crop for r in FaceRecognizer(preset="fast").crop_many(paths) if r.ok])
    x = Embedder("sface").preprocess(crops)
    runners = {}
    for model in ("sface", "sface-int8"):
        path = resolve_model_file(model)
        for engine, cls in ENGINES.items():
            runners[(model, engine)] = cls(path)

    def l2(e: np.ndarray) -> np.ndarray:
        e = e.reshape(len(e), -1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def embed(runner) -> np.ndarray:
        return l2(np.concatenate([runner.run(x[i : i + 32])[0] for i in range(0, len(x), 32)]))

    ref = embed(runners[("sface", "onnxruntime")])
    print(f"{len(x)} crops; cosine to fp32 (ONNX Runtime):")
    for key, runner in runners.items():
        cos = (embed(runner) * ref).sum(1)
        print(
            f"  {key[0]:<11} {key[1]:<12} min {cos.min():.4f}  p1 {np.percentile(cos, 1):.4f}"
            f"  mean {cos.mean():.5f}"
        )
    print("ms per crop (median of rounds), ratio to fp32 on OpenCV DNN:")
    for batch in (1, 2, 32):
        xb = x[:batch]
        for runner in runners.values():
            runner.run(xb)
        times: dict = {k: [] for k in runners}
        for _ in range(args.rounds if batch < 32 else max(args.rounds // 4, 3)):
            for key, runner in runners.items():
                t0 = time.perf_counter()
                runner.run(xb)
                times[key].append(time.perf_counter() - t0)
        base = np.median(times[("sface", "opencv")])
        print(f"  batch {batch}:")
        for key, ts in times.items():
            med = np.median(ts)
            print(f"    {key[0]:<11} {key[1]:<12} {1000 * med / batch:7.2f} ms  {med / base:5.2f}x")


if __name__ == "__main__":
    main()
