"""LFW 10-fold accuracy of each preset through the public API (``FaceRecognizer.embed``).

    python bench/presets_lfw.py --data ../shared/data/lfw [--preset accurate fast] [--json OUT]
        [--all] [--save DIR]

Every image of pairs.txt is embedded one call at a time with ``FaceRecognizer(preset=...)``
and nothing else set, exactly as a user would; an image without a face makes its pairs
score -1 (a sure "different") and is counted. Prints accuracy mean +- std over the 10 folds,
photos without a face, and wall time per photo (a loaded machine inflates it; compare speed
with ``bench/pipeline_vs_opencv.py``, which measures ratios in one run).

``--all`` embeds all 13,233 LFW images (not only the 7,701 of pairs.txt) and also
calibrates: thresholds at FAR 1e-2..1e-6 on all image pairs (the rule of
:func:`npcface.eval.calibrate.thresholds_at_fars`), and the FAR and TAR that the thresholds
shipped in ``sdk/calibration.py`` give with this preset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from npcface import FaceRecognizer, NoFaceError
from npcface.eval import evaluate_verification, read_lfw_pairs
from npcface.eval.calibrate import pair_scores_by_label, thresholds_at_fars


def run(preset: str, data: str, limit: int | None, every: bool, save: str | None) -> dict:
    pairs = read_lfw_pairs(data)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    if every:
        paths = sorted(Path(data, "images").glob("*/*.jpg"))
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
    out = {
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
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        np.savez(
            Path(save) / f"lfw_{preset}.npz",
            paths=np.array([str(p) for p in emb]),
            embeddings=np.stack(list(emb.values())),
        )
    if every:
        kept = list(emb)
        _, ids = np.unique([p.parent.name for p in kept], return_inverse=True)
        gen, imp = pair_scores_by_label(np.stack([emb[p] for p in kept]), ids)
        thresholds, tar = thresholds_at_fars(gen, imp)
        shipped = {k: v for k, v in rec.info.thresholds.items() if k.startswith("far=")}
        out["calibration"] = {
            "genuine": len(gen),
            "impostor": len(imp),
            "thresholds": thresholds,
            "tar": tar,
            "shipped": {
                k: {
                    "threshold": v,
                    "far": float((imp >= v).mean()),
                    "tar": float((gen >= v).mean()),
                }
                for k, v in shipped.items()
            },
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--preset", nargs="+", default=["accurate", "fast"])
    ap.add_argument("--limit", type=int, default=None, help="first N images only (a trial)")
    ap.add_argument("--json", default=None, help="write the reports here")
    ap.add_argument("--all", action="store_true", help="all LFW images; calibrate too")
    ap.add_argument("--save", default=None, help="folder for the embeddings (npz)")
    args = ap.parse_args()
    reports = [run(p, args.data, args.limit, args.all, args.save) for p in args.preset]
    for r in reports:
        print(
            f"{r['preset']:<9} {r['detector']:<10} flip={r['flip']!s:<5} LFW "
            f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} % "
            f"({r['pairs']} pairs), no face {r['no_face']}, {r['ms_per_image']:.1f} ms/photo"
        )
        if "calibration" in r:
            print(json.dumps(r["calibration"], indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(reports, fh, indent=2)


if __name__ == "__main__":
    main()
