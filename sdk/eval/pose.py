"""A frontal-to-turned verification benchmark built from a folder of identities (CelebA subset),
and accuracy by yaw bin.

Building (``npcface eval make-pose DIR --out OUT``): every photo's head yaw is estimated from
the five landmarks of RetinaFace (:func:`npcface.quality.head_pose`, centre face). For each
identity, its most frontal photo is paired with each of its ``per_identity`` most turned other
photos (genuine pairs). Each genuine pair gets one impostor pair of matching pose: the same
frontal photo with the turned photo of another identity whose |yaw| is nearest. Identities
are split into 10 folds (their sorted order, round robin); an impostor pair belongs to its
frontal photo's fold. Photos where RetinaFace finds no face are left out of the benchmark.

Written: ``OUT/pairs.csv`` (``path1,path2,label,fold``, paths relative to the data folder,
readable by :func:`npcface.eval.read_pairs_csv` and ``npcface eval pairs``) and
``OUT/yaw.csv`` (``path,yaw,pitch,roll`` of every photo used, degrees).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

log = logging.getLogger(__name__)

YAW_BINS = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)
"""Edges of the |yaw| bins (degrees) of the per-bin report."""


@dataclass(frozen=True)
class PoseBenchmark:
    """Where a built benchmark was written and what it holds."""

    pairs_csv: Path
    yaw_csv: Path
    identities: int
    genuine: int
    impostor: int
    photos_without_face: int


def estimate_yaws(
    paths: Sequence[Path], detector: str = "retinaface", progress: bool = True
) -> dict[Path, tuple[float, float, float]]:
    """(yaw, pitch, roll) in degrees of the centre face of each photo; photos without a face
    are left out."""
    from tqdm import tqdm

    from ..detect import get_detector
    from ..image import load_image
    from ..quality import head_pose
    from ..recognizer import select_face

    det = get_detector(detector)
    out: dict[Path, tuple[float, float, float]] = {}
    for path in tqdm(paths, desc="pose", unit="img", disable=not progress):
        img = load_image(path)
        faces = det.detect(img)
        if faces:
            out[Path(path)] = head_pose(select_face(faces, img.shape, "center").landmarks)
    return out


def build_pose_pairs(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    per_identity: int = 3,
    folds: int = 10,
    progress: bool = True,
) -> PoseBenchmark:
    """Build the benchmark from ``data/<identity>/<photo>`` into the folder ``out``.

    Args:
        data: folder of identity folders (e.g. ``../shared/data/celeba-subset``).
        out: output folder (created).
        per_identity: genuine pairs per identity (its most turned photos, each with its
            most frontal one).
        folds: number of cross-validation folds.
        progress: show a progress bar.

    Raises:
        InvalidArgumentError: fewer than ``folds`` identities with two usable photos.
    """
    from .calibrate import identity_images

    root = Path(data)
    items = identity_images(root)
    poses = estimate_yaws([p for p, _ in items], progress=progress)
    by_id: dict[str, list[Path]] = {}
    for p, ident in items:
        if p in poses:
            by_id.setdefault(ident, []).append(p)
    ids = sorted(i for i, ps in by_id.items() if len(ps) >= 2)
    if len(ids) < folds:
        raise InvalidArgumentError(
            f"{data}: {len(ids)} identities with two photos with a face, need >= {folds}"
        )
    fold_of = {ident: k % folds for k, ident in enumerate(ids)}
    frontal: dict[str, Path] = {}
    turned: dict[str, list[Path]] = {}
    for ident in ids:
        ps = sorted(by_id[ident], key=lambda p: abs(poses[p][0]))
        frontal[ident] = ps[0]
        turned[ident] = ps[::-1][: min(per_identity, len(ps) - 1)]
    pool = [(abs(poses[t][0]), ident, t) for ident in ids for t in turned[ident]]
    pool_yaw = np.array([y for y, _, _ in pool])
    rows: list[tuple[Path, Path, int, int]] = []
    used: set[tuple[Path, Path]] = set()
    for ident in ids:
        for t in turned[ident]:
            rows.append((frontal[ident], t, 1, fold_of[ident]))
            order = np.argsort(np.abs(pool_yaw - abs(poses[t][0])), kind="stable")
            for j in order:
                _, other, t2 = pool[int(j)]
                if other != ident and (frontal[ident], t2) not in used:
                    used.add((frontal[ident], t2))
                    rows.append((frontal[ident], t2, 0, fold_of[ident]))
                    break
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_csv, yaw_csv = out_dir / "pairs.csv", out_dir / "yaw.csv"
    with open(pairs_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path1", "path2", "label", "fold"])
        for a, b, label, fold in rows:
            w.writerow([a.relative_to(root), b.relative_to(root), label, fold])
    used_paths = sorted({r[0] for r in rows} | {r[1] for r in rows})
    with open(yaw_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "yaw", "pitch", "roll"])
        for p in used_paths:
            w.writerow([p.relative_to(root), *(f"{v:.2f}" for v in poses[p])])
    genuine = sum(r[2] for r in rows)
    return PoseBenchmark(
        pairs_csv=pairs_csv,
        yaw_csv=yaw_csv,
        identities=len(ids),
        genuine=genuine,
        impostor=len(rows) - genuine,
        photos_without_face=len(items) - len(poses),
    )


def read_yaws(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> dict:
    """``{image path: yaw}`` from a ``path,yaw,...`` CSV (relative paths against ``root``,
    default the CSV's folder)."""
    file = Path(path)
    base = Path(root) if root is not None else file.parent
    with open(file, newline="", encoding="utf-8") as fh:
        return {base / row["path"]: float(row["yaw"]) for row in csv.DictReader(fh)}


def accuracy_by_yaw(
    pairs: Sequence[Any],
    scores: np.ndarray,
    fold_thresholds: dict[int, float],
    yaws: dict[Path, float],
    bins: Sequence[float] = YAW_BINS,
) -> list[dict[str, Any]]:
    """Accuracy of the k-fold decisions per bin of the larger |yaw| of each pair's photos.

    Args:
        pairs: the :class:`~npcface.eval.Pair` list that ``scores`` belongs to.
        scores: (n,) similarities.
        fold_thresholds: ``{fold id: threshold chosen on the other folds}``.
        yaws: ``{path: yaw}``; pairs with a photo missing here are left out.
        bins: ascending |yaw| edges in degrees.

    Returns:
        One ``{"bin", "pairs", "genuine", "accuracy"}`` dict per bin with pairs.
    """
    rows = []
    y = np.array(
        [max(abs(yaws.get(p.path1, np.nan)), abs(yaws.get(p.path2, np.nan))) for p in pairs]
    )
    ok = np.array(
        [
            (s >= fold_thresholds[p.fold]) == p.same
            for p, s in zip(pairs, np.asarray(scores), strict=True)
        ]
    )
    same = np.array([p.same for p in pairs])
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (y >= lo) & (y < hi) if hi < bins[-1] else (y >= lo) & (y <= hi)
        if sel.any():
            rows.append(
                {
                    "bin": f"{lo:g}-{hi:g}",
                    "pairs": int(sel.sum()),
                    "genuine": int(same[sel].sum()),
                    "accuracy": float(ok[sel].mean()),
                }
            )
    return rows


def plot_accuracy_by_yaw(
    curves: dict[str, list[dict[str, Any]]], path: str | os.PathLike[str]
) -> Path:
    """Bar chart of accuracy by yaw bin, one bar group per bin, one colour per pipeline."""
    return plot_accuracy_by_group(curves, path, xlabel="|yaw| of the turned photo (degrees)")


def plot_accuracy_by_group(
    curves: dict[str, list[dict[str, Any]]],
    path: str | os.PathLike[str],
    xlabel: str,
    ylim: tuple[float, float] = (50, 100),
) -> Path:
    """Bar chart of accuracy by group (``{"bin", "pairs", "accuracy"}`` rows, as
    :func:`accuracy_by_yaw` and :func:`npcface.eval.hard.suite_report` give), one bar group per
    group, one colour per pipeline; the PNG is written to ``path``.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    from ..errors import MissingExtraError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("plotting", "plot", "matplotlib") from exc
    labels = [r["bin"] for r in next(iter(curves.values()))]
    width = 0.8 / max(len(curves), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (name, rows) in enumerate(curves.items()):
        acc = {r["bin"]: 100 * r["accuracy"] for r in rows}
        xs = np.arange(len(labels)) + k * width
        ax.bar(xs, [acc.get(b, 0.0) for b in labels], width, label=name)
    counts = {r["bin"]: r["pairs"] for r in next(iter(curves.values()))}
    ticks = [f"{b}\n({counts[b]} pairs)" for b in labels]
    ax.set_xticks(np.arange(len(labels)) + width * (len(curves) - 1) / 2, ticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("10-fold accuracy (%)")
    ax.set_ylim(*ylim)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
