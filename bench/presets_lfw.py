"""LFW 10-fold accuracy of each preset through the public API (``FaceRecognizer.embed``).

    python bench/presets_lfw.py --data ../shared/data/lfw [--preset accurate fast] [--json OUT]

Every image of pairs.txt is embedded one call at a time with ``FaceRecognizer(preset=...)``
and nothing else set, exactly as a user would; an image without a face makes its pairs
score -1 (a sure "different") and is counted. Prints accuracy mean +- std over the 10 folds,
photos without a face, and wall time per photo (a loaded machine inflates it; compare speed
with ``bench/pipeline_vs_opencv.py``, which measures ratios in one run).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from npcface import FaceRecognizer, NoFaceError
from npcface.eval import evaluate_verification, read_lfw_pairs


def run(preset: str, data: str, limit: int | None) -> dict:
    pairs = read_lfw_pairs(data)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    if limit:
        keep = set(paths[:limit])
        pairs = [p for p in pairs if p.path1 in keep and p.path2 in keep]
        paths = sorted(keep)
    rec = FaceRecognizer(preset=preset)
    emb: dict = {}
    failed = []
    t0 = time.perf_counter()
    for path in tqdm(paths, desc=preset, unit="img", mininterval=30):
        try:
            emb[path] = rec.embed(path)
        except NoFaceError:
            failed.append(str(path))
    seconds = time.perf_counter() - t0
    scores = np.array(
        [
            float(emb[p.path1] @ emb[p.path2]) if p.path1 in emb and p.path2 in emb else -1.0
            for p in pairs
        ]
    )
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    rep = evaluate_verification(scores, labels, folds, fars=(1e-3,))
    return {
        "preset": preset,
        "detector": rec.detector.name,
        "face_policy": rec.face_policy,
        "flip": rec.flip,
        "pairs": len(pairs),
        "images": len(paths),
        "accuracy_mean": rep.accuracy_mean,
        "accuracy_std": rep.accuracy_std,
        "accuracies": list(rep.accuracies),
        "tar_at_far_1e-3": rep.tar_at_far[1e-3],
        "no_face": len(failed),
        "no_face_images": failed,
        "ms_per_image": 1000 * seconds / len(paths),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--preset", nargs="+", default=["accurate", "fast"])
    ap.add_argument("--limit", type=int, default=None, help="first N images only (a trial)")
    ap.add_argument("--json", default=None, help="write the reports here")
    args = ap.parse_args()
    reports = [run(p, args.data, args.limit) for p in args.preset]
    for r in reports:
        print(
            f"{r['preset']:<9} {r['detector']:<10} flip={r['flip']!s:<5} LFW "
            f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} % "
            f"({r['pairs']} pairs), no face {r['no_face']}, {r['ms_per_image']:.1f} ms/photo"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(reports, fh, indent=2)


if __name__ == "__main__":
    main()
