"""What the overall face quality predicts: genuine pass rate at the default threshold by quality.

    python bench/quality_vs_pass.py --pairs POSE/pairs.csv --root ../shared/data/celeba-subset

Every photo of the pairs file is embedded through ``FaceRecognizer(preset=...)`` (its face
carries :class:`npcface.quality.FaceQuality`). Genuine pairs are binned by the lower overall
quality of their two faces; for each bin the share that passes the default threshold
(FAR 1e-3 on LFW) is printed, and the impostor pairs' false accepts. Also prints the
distribution of each quality factor, which is what the ramps in ``npcface.quality`` were
set from.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
from tqdm import tqdm

from npcface import FaceRecognizer, NoFaceError
from npcface.eval import read_pairs_csv

BINS = (0.0, 0.25, 0.5, 0.75, 1.0001)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--root", default=None)
    ap.add_argument("--preset", default="accurate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    pairs = read_pairs_csv(args.pairs, root=args.root)
    rec = FaceRecognizer(preset=args.preset)
    thr = rec.default_threshold()
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    got = {}
    for path in tqdm(paths, unit="img", mininterval=30):
        with contextlib.suppress(NoFaceError):
            got[path] = rec.represent(path)
    rows = []
    for p in pairs:
        if p.path1 in got and p.path2 in got:
            (e1, f1), (e2, f2) = got[p.path1], got[p.path2]
            q = min(f1.quality.overall, f2.quality.overall)
            rows.append((p.same, float(e1 @ e2) >= thr, q))
    same = np.array([r[0] for r in rows])
    acc = np.array([r[1] for r in rows])
    q = np.array([r[2] for r in rows])
    report = {"threshold": thr, "bins": []}
    print(f"preset {args.preset}, threshold {thr:.4f}, pairs {len(rows)}")
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        g = same & (q >= lo) & (q < hi)
        i = ~same & (q >= lo) & (q < hi)
        b = {
            "quality": f"{lo:g}-{min(hi, 1):g}",
            "genuine": int(g.sum()),
            "genuine_pass": float(acc[g].mean()) if g.any() else None,
            "impostor": int(i.sum()),
            "impostor_accept": float(acc[i].mean()) if i.any() else None,
        }
        report["bins"].append(b)
        print(b)
    qs = [f.quality for _, f in got.values()]
    for name in ("yaw", "pitch", "sharpness", "size", "score", "overall"):
        v = np.array([abs(getattr(x, name)) for x in qs])
        pct = np.percentile(v, [5, 25, 50, 75, 95]).round(2).tolist()
        report[name] = pct
        print(f"|{name}| percentiles 5/25/50/75/95: {pct}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
