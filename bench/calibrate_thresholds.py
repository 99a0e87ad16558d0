"""Calibrate a recogniser's cosine thresholds at stated false-accept rates on all of LFW.

    python bench/calibrate_thresholds.py --data ../shared/data/lfw [--recognizer sface]

Embeds every LFW image (13,233; face policy "center"), then scores every pair of images:
about 240k genuine pairs (same person) and 87M impostor pairs (different people). For each
FAR the threshold is the smallest one whose impostor accept rate is <= FAR (decision
``similarity >= threshold``). Prints the thresholds with the TAR each gives, and the Python
entry for ``sdk/calibration.py``. LFW pairs.txt alone has only 3,000 impostor pairs, too few
for FAR below 1e-3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from npcface import FaceRecognizer
from npcface.eval.lfw import embed_paths

FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FAR = 1e-3


def impostor_and_genuine(emb: np.ndarray, ids: np.ndarray, block: int = 2048):
    """Upper-triangle scores split by label; impostors kept in full as float32."""
    n = len(emb)
    gen, imp = [], []
    for start in range(0, n, block):
        sims = emb[start : start + block] @ emb.T
        rows = np.arange(start, min(start + block, n))
        upper = np.arange(n)[None, :] > rows[:, None]
        same = ids[rows][:, None] == ids[None, :]
        gen.append(sims[upper & same])
        imp.append(sims[upper & ~same])
    return np.concatenate(gen), np.concatenate(imp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--recognizer", default="sface")
    ap.add_argument("--flip", action="store_true")
    args = ap.parse_args()

    paths = sorted(Path(args.data, "images").glob("*/*.jpg"))
    rec = FaceRecognizer(recognizer=args.recognizer, flip=args.flip, face_policy="center")
    table = embed_paths(rec, paths)
    keep = np.array([p not in table.failed for p in table.paths])
    ids = np.array([p.parent.name for p in table.paths])[keep]
    _, ids = np.unique(ids, return_inverse=True)
    gen, imp = impostor_and_genuine(table.embeddings[keep], ids)
    print(
        f"images {len(paths)}, no face {len(table.failed)}, genuine pairs {len(gen):,}, "
        f"impostor pairs {len(imp):,}"
    )
    thresholds = {}
    for far in FARS:
        k = int(np.floor(far * len(imp)))  # at most k impostors may be accepted
        kth = np.partition(imp, len(imp) - k - 1)[len(imp) - k - 1]  # (k+1)-th largest
        thr = float(np.nextafter(kth, np.float32(np.inf)))
        tar = float((gen >= thr).mean())
        real_far = float((imp >= thr).mean())
        thresholds[f"far={far:g}"] = round(thr, 4)
        print(f"FAR {far:g}: threshold {thr:.4f} (measured FAR {real_far:.2e}), TAR {tar:.4f}")
    thresholds["default"] = thresholds[f"far={DEFAULT_FAR:g}"]
    source = (
        f"LFW deep-funneled, all {len(gen):,} genuine and {len(imp):,} impostor image pairs "
        f"({len(paths)} images, YuNet + center face policy, flip={args.flip}); "
        f"default = threshold at FAR {DEFAULT_FAR:g}; bench/calibrate_thresholds.py"
    )
    print(json.dumps({rec.info.name: {"thresholds": thresholds, "source": source}}, indent=4))


if __name__ == "__main__":
    main()
