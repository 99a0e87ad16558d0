"""Recognisers side by side on the hard-pairs suite, in one run, with paired per-fold differences.

    npcface eval make-hard ../shared/data --out hard/          # once: the suite's files
    python bench/hard_pairs.py --data ../shared/data --suite hard/ [--preset accurate]
        [--recognizers sface sface-int8] [--cache hard/cache] [--plot docs/hard_pairs.png]
        [--json OUT.json]

Each recogniser runs in the preset's pipeline (``FaceRecognizer(preset=..., recognizer=R)``,
batched ``embed_many``, as ``npcface eval pairs`` does) over every photo of the suite. For
each: the 10-fold accuracy (mean +- population std of the folds) overall and per part,
TAR at FAR 1e-3 and 1e-4 against every impostor pair of the suite
(:func:`npcface.eval.hard.suite_report`), and accuracy per group. For every recogniser after
the first: the per-fold differences to the first (mean +- std over the 10 folds, folds
better / worse), which cancel what the folds share and so measure a difference far more
tightly than the folds' spread; and the cosine of its embedding of each photo to the first's,
by photo group (frontal, |yaw| bins of the turned photos, LAG): how far quantisation moves
an embedding, with or without labels. Embeddings are cached under ``--cache`` by preset and
prepared model file (an INT8 recipe change makes a new file name), so a rerun only scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from npcface import FaceRecognizer
from npcface.eval import kfold_accuracy, read_pairs_csv
from npcface.eval.hard import GROUP_XLABEL, read_suite, suite_report
from npcface.eval.lfw import MISSING_SCORE, embed_paths
from npcface.eval.pose import plot_accuracy_by_group


def embeddings(rec: FaceRecognizer, paths: list[Path], cache: Path | None) -> dict:
    """``{path: embedding}`` of the photos with a face (cached by preset and model file)."""
    file = None
    if cache is not None:
        model = Path(rec.embedder.path).stem
        file = cache / f"{rec.preset}-{rec.info.name}-{model}-flip{int(rec.flip)}.npz"
        if file.is_file():
            z = np.load(file)
            if list(z["paths"]) == [str(p) for p in paths]:
                return {
                    Path(p): e for p, e, ok in zip(z["paths"], z["emb"], z["ok"], strict=True) if ok
                }
    t0 = time.perf_counter()
    table = embed_paths(rec, paths)
    print(f"  {rec.info.name}: {len(paths)} photos in {time.perf_counter() - t0:.0f} s")
    ok = np.array([p not in table.failed for p in table.paths])
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, paths=np.array([str(p) for p in paths]), emb=table.embeddings, ok=ok)
    return {p: e for p, e, k in zip(table.paths, table.embeddings, ok, strict=True) if k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data", help="the folder the suite is relative to")
    ap.add_argument("--suite", required=True, help="folder written by npcface eval make-hard")
    ap.add_argument("--preset", default="accurate")
    ap.add_argument("--recognizers", nargs="+", default=["sface", "sface-int8"])
    ap.add_argument("--cache", default=None, help="embedding cache folder")
    ap.add_argument("--plot", default=None, help="bar chart by group, one colour per recogniser")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args()

    suite = Path(args.suite)
    pairs = read_pairs_csv(suite / "pairs.csv", root=args.data)
    photos = read_suite(suite / "photos.csv", root=args.data)
    paths = sorted({s.path for s in photos} | {p.path1 for p in pairs} | {p.path2 for p in pairs})
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    part_of = {s.path: s.part for s in photos}
    parts = np.array([part_of.get(p.path1, "other") for p in pairs])
    print(
        f"{len(pairs)} pairs ({labels.sum()} genuine) of {len(paths)} photos; "
        f"parts: {', '.join(f'{k} {int((parts == k).sum())}' for k in sorted(set(parts)))}"
    )
    cache = Path(args.cache) if args.cache else None
    results: dict[str, dict] = {}
    embs: dict[str, dict] = {}
    for name in args.recognizers:
        rec = FaceRecognizer(preset=args.preset, recognizer=name)
        emb = embs[name] = embeddings(rec, paths, cache)
        scores = np.array(
            [
                float(emb[p.path1] @ emb[p.path2])
                if p.path1 in emb and p.path2 in emb
                else MISSING_SCORE
                for p in pairs
            ]
        )
        kf = kfold_accuracy(scores, labels, folds)
        res = {
            "accuracies": list(kf.accuracies),
            "accuracy_mean": kf.mean,
            "accuracy_std": kf.std,
            "no_face": len(paths) - len(emb),
        }
        for part in sorted(set(parts)):
            m = parts == part
            k = kfold_accuracy(scores[m], labels[m], folds[m])
            res[f"{part}_accuracies"] = list(k.accuracies)
            res[f"{part}_mean"], res[f"{part}_std"] = k.mean, k.std
        res.update(suite_report(pairs, scores, photos, emb))
        results[name] = res

    ref_name = args.recognizers[0]
    ref = results[ref_name]
    print(f"\npreset {args.preset}; differences are per fold against {ref_name} (same folds)")
    for name, r in results.items():
        t3, t4 = (r["tar_at_far_all"][k] for k in ("0.001", "0.0001"))
        line = (
            f"{name:<12} accuracy {100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f}"
        )
        for part in sorted(set(parts)):
            line += f" | {part} {100 * r[part + '_mean']:.2f} +- {100 * r[part + '_std']:.2f}"
        line += (
            f" | TAR@1e-3 {100 * t3['tar']:.2f} (folds +- {100 * t3['fold_std']:.2f})"
            f" | TAR@1e-4 {100 * t4['tar']:.2f} (folds +- {100 * t4['fold_std']:.2f})"
            f" | no face {r['no_face']}"
        )
        print(line)
        print(
            "    by group: "
            + ", ".join(
                f"{g['bin']} {100 * g['accuracy']:.2f} ({g['pairs']})" for g in r["by_group"]
            )
        )
        if name == ref_name:
            continue
        diffs = {
            "accuracy": np.subtract(r["accuracies"], ref["accuracies"]),
            **{
                part: np.subtract(r[part + "_accuracies"], ref[part + "_accuracies"])
                for part in sorted(set(parts))
            },
            **{
                f"TAR@{far}": np.subtract(
                    r["tar_at_far_all"][far]["per_fold"], ref["tar_at_far_all"][far]["per_fold"]
                )
                for far in ("0.001", "0.0001")
            },
        }
        r["paired"] = {}
        for key, d in diffs.items():
            r["paired"][key] = {
                "mean": float(d.mean()),
                "std": float(d.std()),
                "better": int((d > 0).sum()),
                "worse": int((d < 0).sum()),
            }
            print(
                f"    {key} - {ref_name}: {100 * d.mean():+.2f} +- {100 * d.std():.2f} per fold "
                f"(standard error {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f}; "
                f"{(d > 0).sum()} folds better, {(d < 0).sum()} worse)"
            )
    photo_groups = {
        "frontal": [s.path for s in photos if s.role == "frontal"],
        **{
            f"turned {lo:g}-{min(hi, 90):g}": [
                s.path for s in photos if s.role == "turned" and lo <= abs(s.yaw) < hi
            ]
            for lo, hi in ((20, 30), (30, 45), (45, 91))
        },
        "LAG": [s.path for s in photos if s.part == "age"],
    }
    first = embs[ref_name]
    for name in args.recognizers[1:]:
        print(f"cosine of {name}'s embeddings to {ref_name}'s (mean / 1st percentile / min):")
        results[name]["cosine_to_first"] = {}
        for group, ps in photo_groups.items():
            both = [p for p in ps if p in first and p in embs[name]]
            if both:
                cos = np.array([float(embs[name][p] @ first[p]) for p in both])
                row = [float(cos.mean()), float(np.percentile(cos, 1)), float(cos.min())]
                results[name]["cosine_to_first"][group] = [len(both), *row]
                print(
                    f"    {group:<14} {len(both):>5} photos  " + " / ".join(f"{v:.4f}" for v in row)
                )
    if args.plot:
        curves = {
            f"{n} ({100 * r['accuracy_mean']:.2f}%)": r["by_group"] for n, r in results.items()
        }
        plot_accuracy_by_group(curves, args.plot, xlabel=GROUP_XLABEL, ylim=(75, 100))
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
