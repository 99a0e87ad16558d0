"""The hard-pairs suite: frontal-to-turned pairs (a CelebA subset) and young-to-adult pairs
(LAG), 10 folds by identity, with TAR at low FAR over every impostor pair of the suite.

Building (``npcface eval make-hard DATA --out OUT``; ``DATA`` holds ``celeba-subset/`` and
``lag/``, each a folder of identity folders):

* **pose part**: the head yaw of every photo's centre face is estimated from RetinaFace's five
  landmarks (:func:`npcface.eval.pose.estimate_yaws`). A photo is *frontal* when
  ``|yaw| < frontal_max`` (10 degrees) and *turned* when ``|yaw| >= turned_min`` (20). Genuine
  pairs: every (frontal, turned) pair of photos of one identity.
* **age part**: LAG's ``young_*`` files show the person younger than the other (*adult*)
  files of the same folder. Genuine pairs: every (adult, young) pair of one identity. LAG
  carries no ages, so pairs are grouped as "young-adult", not by years.
* **folds**: the identities of each part, sorted, go round robin into ``folds`` folds; every
  pair stays inside one fold (its identities' fold), so a threshold chosen on the other
  folds has never seen them.
* **balanced impostors** (for the k-fold accuracy): each genuine pair (f, t) gets one impostor
  (f, t'), t' a photo of the same role (turned / young) of another identity of the same fold,
  not yet paired with f: for pose the one of nearest |yaw|, for age one drawn with a seeded
  generator (deterministic). A genuine pair whose fold has no such photo left goes without
  (none in the shipped data's suite: 13,187 + 5,009 genuine pairs, as many impostors).
* **all impostors** (for TAR at FAR 1e-3 and 1e-4): every pair of a frontal and a turned photo
  of different identities, and every pair of an adult and a young photo of different
  identities: millions of pairs, so FAR 1e-4 is resolved (:func:`suite_report`).

Photos in which RetinaFace finds no face are left out. Written to ``OUT``: ``pairs.csv``
(``path1,path2,label,fold``, paths relative to ``DATA``; path1 is the frontal or adult photo),
``photos.csv`` (``path,identity,part,role,fold,yaw,pitch,roll`` of every photo of the suite)
and ``yaw.csv`` (``path,yaw,pitch,roll`` of the pose part, for ``npcface eval pairs --yaw``).
Then ``npcface eval pairs OUT/pairs.csv --root DATA --suite OUT/photos.csv``.
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
from .metrics import kfold_accuracy, threshold_at_far

log = logging.getLogger(__name__)

FRONTAL_MAX = 10.0
"""|yaw| below which a photo is frontal (degrees)."""
TURNED_MIN = 20.0
"""|yaw| from which a photo is turned (degrees)."""
POSE_BINS = (20.0, 30.0, 45.0, 90.0)
"""Edges of the |yaw| bins of the turned photo in the per-group report (degrees)."""
AGE_GROUP = "young-adult"
GROUP_XLABEL = "pair group: |yaw| of the turned photo (degrees), or LAG's young-to-adult pairs"
ROLES = {"pose": ("frontal", "turned"), "age": ("adult", "young")}
"""Per part: (role of path1, role of path2) of its pairs."""


@dataclass(frozen=True)
class HardPairs:
    """Where a built suite was written and what it holds.

    Attributes:
        pairs_csv, photos_csv, yaw_csv: the files written.
        identities: ``{part: identities with at least one genuine pair}``.
        genuine, impostor: ``{part: pairs in pairs.csv}`` (one balanced impostor per genuine).
        photos_without_face: photos of the data folders where RetinaFace found no face.
    """

    pairs_csv: Path
    photos_csv: Path
    yaw_csv: Path
    identities: dict[str, int]
    genuine: dict[str, int]
    impostor: dict[str, int]
    photos_without_face: int


@dataclass(frozen=True)
class SuitePhoto:
    """One photo of the suite (a row of ``photos.csv``); yaw, pitch, roll in degrees."""

    path: Path
    identity: str
    part: str
    role: str
    fold: int
    yaw: float
    pitch: float
    roll: float


def build_hard_pairs(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    pose: str | None = "celeba-subset",
    age: str | None = "lag",
    folds: int = 10,
    frontal_max: float = FRONTAL_MAX,
    turned_min: float = TURNED_MIN,
    seed: int = 0,
    progress: bool = True,
) -> HardPairs:
    """Build the suite from ``data/<pose>/`` and ``data/<age>/`` into the folder ``out``.

    Args:
        data: folder holding the two datasets (e.g. ``../shared/data``).
        out: output folder (created).
        pose: sub-folder of identity folders for the pose part (None: no pose part).
        age: sub-folder of identity folders with ``young_*`` files (None: no age part).
        folds: number of cross-validation folds.
        frontal_max: |yaw| below which a photo is frontal (degrees).
        turned_min: |yaw| from which a photo is turned (degrees).
        seed: seed of the age part's impostor draw.
        progress: show a progress bar.

    Returns:
        What was written (:class:`HardPairs`).

    Raises:
        InvalidArgumentError: no part chosen, ``frontal_max > turned_min``, or a part has
            fewer than ``folds`` identities with a genuine pair.
    """
    from .calibrate import identity_images
    from .pose import estimate_yaws

    if pose is None and age is None:
        raise InvalidArgumentError("choose at least one of the pose and age parts")
    if frontal_max > turned_min:
        raise InvalidArgumentError(f"frontal_max {frontal_max} > turned_min {turned_min}")
    root = Path(data)
    parts = {k: v for k, v in (("pose", pose), ("age", age)) if v is not None}
    items = {part: identity_images(root / sub) for part, sub in parts.items()}
    everything = [p for its in items.values() for p, _ in its]
    poses = estimate_yaws(everything, progress=progress)
    photos: list[SuitePhoto] = []
    rows: list[tuple[Path, Path, int, int]] = []
    rng = np.random.default_rng(seed)
    for part, its in items.items():
        roles: dict[str, dict[str, list[Path]]] = {}
        for p, ident in its:
            if p in poses:
                role = _role(part, p, abs(poses[p][0]), frontal_max, turned_min)
                if role is not None:
                    roles.setdefault(ident, {}).setdefault(role, []).append(p)
        first, second = ROLES[part]
        ids = sorted(i for i, r in roles.items() if r.get(first) and r.get(second))
        if len(ids) < folds:
            raise InvalidArgumentError(
                f"{root / parts[part]}: {len(ids)} identities with a genuine {part} pair, "
                f"need >= {folds}"
            )
        fold_of = {ident: k % folds for k, ident in enumerate(ids)}
        for ident in ids:
            for role in (first, second):
                for p in roles[ident][role]:
                    photos.append(SuitePhoto(p, ident, part, role, fold_of[ident], *poses[p]))
        for fold in range(folds):
            members = [i for i in ids if fold_of[i] == fold]
            rows += _fold_pairs(members, roles, first, second, poses, part, fold, rng)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_csv, photos_csv, yaw_csv = (out_dir / n for n in ("pairs.csv", "photos.csv", "yaw.csv"))
    _write(
        pairs_csv,
        ["path1", "path2", "label", "fold"],
        [(a.relative_to(root), b.relative_to(root), label, f) for a, b, label, f in rows],
    )
    _write(
        photos_csv,
        ["path", "identity", "part", "role", "fold", "yaw", "pitch", "roll"],
        [
            (s.path.relative_to(root), s.identity, s.part, s.role, s.fold)
            + tuple(f"{v:.2f}" for v in (s.yaw, s.pitch, s.roll))
            for s in photos
        ],
    )
    _write(
        yaw_csv,
        ["path", "yaw", "pitch", "roll"],
        [
            (s.path.relative_to(root), *(f"{v:.2f}" for v in (s.yaw, s.pitch, s.roll)))
            for s in photos
            if s.part == "pose"
        ],
    )
    part_of = {s.path: s.part for s in photos}
    return HardPairs(
        pairs_csv=pairs_csv,
        photos_csv=photos_csv,
        yaw_csv=yaw_csv,
        identities={part: len({s.identity for s in photos if s.part == part}) for part in parts},
        genuine={part: sum(1 for r in rows if r[2] and part_of[r[0]] == part) for part in parts},
        impostor={
            part: sum(1 for r in rows if not r[2] and part_of[r[0]] == part) for part in parts
        },
        photos_without_face=len(everything) - len(poses),
    )


def _role(part: str, path: Path, abs_yaw: float, frontal_max: float, turned_min: float) -> Any:
    if part == "age":
        return "young" if path.name.startswith("young_") else "adult"
    if abs_yaw < frontal_max:
        return "frontal"
    return "turned" if abs_yaw >= turned_min else None


def _fold_pairs(
    members: list[str],
    roles: dict[str, dict[str, list[Path]]],
    first: str,
    second: str,
    poses: dict[Path, tuple[float, float, float]],
    part: str,
    fold: int,
    rng: np.random.Generator,
) -> list[tuple[Path, Path, int, int]]:
    """Genuine pairs of one fold, each followed by its balanced impostor."""
    pool = [(ident, t) for ident in members for t in roles[ident][second]]
    pool_yaw = np.array([abs(poses[t][0]) for _, t in pool])
    rows: list[tuple[Path, Path, int, int]] = []
    used: set[tuple[Path, Path]] = set()
    for ident in members:
        for f in roles[ident][first]:
            for t in roles[ident][second]:
                rows.append((f, t, 1, fold))
                if part == "pose":
                    order = np.argsort(np.abs(pool_yaw - abs(poses[t][0])), kind="stable")
                else:
                    order = rng.permutation(len(pool))
                for j in order:
                    other, t2 = pool[int(j)]
                    if other != ident and (f, t2) not in used:
                        used.add((f, t2))
                        rows.append((f, t2, 0, fold))
                        break
    return rows


def _write(path: Path, header: list[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def read_suite(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[SuitePhoto]:
    """The photos of a suite from its ``photos.csv`` (relative paths against ``root``, default
    the CSV's folder).

    Raises:
        InvalidArgumentError: a column is missing or a role does not belong to its part.
    """
    file = Path(path)
    base = Path(root) if root is not None else file.parent
    out = []
    with open(file, newline="", encoding="utf-8") as fh:
        for no, row in enumerate(csv.DictReader(fh), start=2):
            try:
                s = SuitePhoto(
                    base / row["path"],
                    row["identity"],
                    row["part"],
                    row["role"],
                    int(row["fold"]),
                    float(row["yaw"]),
                    float(row["pitch"]),
                    float(row["roll"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"{file}:{no}: not a suite row ({exc})") from None
            if s.role not in ROLES.get(s.part, ()):
                raise InvalidArgumentError(f"{file}:{no}: role {s.role!r} of part {s.part!r}")
            out.append(s)
    return out


def all_impostor_scores(
    photos: Sequence[SuitePhoto], embeddings: dict[Path, np.ndarray], missing: float = -1.0
) -> np.ndarray:
    """Scores of every impostor pair of the suite: per part, each photo of the first role
    (frontal, adult) with each photo of the second role (turned, young) of another identity.

    Args:
        photos: the suite (:func:`read_suite`).
        embeddings: ``{path: unit embedding (d,)}``; a photo missing here (no face in the
            pipeline under test) scores ``missing`` with everyone.
        missing: the score of a pair with a photo without an embedding.

    Returns:
        (n,) float32 cosine similarities, all parts concatenated.
    """
    dim = len(next(iter(embeddings.values())))
    out = []
    for part, (first, second) in ROLES.items():
        a = [s for s in photos if s.part == part and s.role == first]
        b = [s for s in photos if s.part == part and s.role == second]
        if not a or not b:
            continue
        ea, ma = _stack(a, embeddings, dim)
        eb, mb = _stack(b, embeddings, dim)
        ida = np.array([s.identity for s in a])
        idb = np.array([s.identity for s in b])
        for start in range(0, len(a), 1024):
            sl = slice(start, start + 1024)
            sims = ea[sl] @ eb.T
            sims[~(ma[sl, None] & mb[None, :])] = missing
            out.append(sims[ida[sl, None] != idb[None, :]])
    return np.concatenate(out).astype(np.float32)


def _stack(
    photos: Sequence[SuitePhoto], embeddings: dict[Path, np.ndarray], dim: int
) -> tuple[np.ndarray, np.ndarray]:
    e = np.zeros((len(photos), dim), np.float32)
    have = np.zeros(len(photos), bool)
    for i, s in enumerate(photos):
        if s.path in embeddings:
            e[i], have[i] = embeddings[s.path], True
    return e, have


def pair_groups(pairs: Sequence[Any], photos: Sequence[SuitePhoto]) -> list[str]:
    """The group of each pair: ``"yaw LO-HI"`` (bin of its turned photo's |yaw|, edges
    :data:`POSE_BINS`) for pose pairs, :data:`AGE_GROUP` for age pairs, ``"other"`` else."""
    by_path = {s.path: s for s in photos}
    out = []
    for p in pairs:
        s = by_path.get(p.path2)
        if s is None:
            out.append("other")
        elif s.part == "age":
            out.append(AGE_GROUP)
        else:
            y = min(abs(s.yaw), POSE_BINS[-1])
            k = max(int(np.searchsorted(POSE_BINS, y, side="right")) - 1, 0)
            k = min(k, len(POSE_BINS) - 2)
            out.append(f"yaw {POSE_BINS[k]:g}-{POSE_BINS[k + 1]:g}")
    return out


def suite_report(
    pairs: Sequence[Any],
    scores: np.ndarray,
    photos: Sequence[SuitePhoto],
    embeddings: dict[Path, np.ndarray],
    fars: Sequence[float] = (1e-3, 1e-4),
) -> dict[str, Any]:
    """TAR at each FAR against every impostor pair of the suite, per fold, and the k-fold
    accuracy per group.

    The threshold at a FAR is set on all impostor pairs (:func:`all_impostor_scores`, the
    rule of :func:`~npcface.eval.threshold_at_far`); TAR is the fraction of the genuine pairs
    of ``pairs`` at or above it, over all of them and per fold (mean and population std of
    the folds). Accuracy per group uses the k-fold thresholds (each fold's chosen on the
    others, :func:`~npcface.eval.kfold_accuracy`).

    Args:
        pairs: the suite's pairs (:func:`~npcface.eval.read_pairs_csv` of ``pairs.csv``).
        scores: (n,) their similarities (-1 where a photo has no embedding).
        photos: the suite (:func:`read_suite`).
        embeddings: ``{path: unit embedding}`` of the photos that have one.
        fars: the false accept rates.

    Returns:
        ``{"impostors_all": n, "tar_at_far_all": {far: {...}}, "by_group": [...]}``.
    """
    scores = np.asarray(scores)
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    impostors = all_impostor_scores(photos, embeddings)
    genuine, gfolds = scores[labels], folds[labels]
    tars: dict[str, Any] = {}
    for far in fars:
        thr = threshold_at_far(impostors, np.zeros(len(impostors), bool), far)
        per_fold = [float((genuine[gfolds == f] >= thr).mean()) for f in np.unique(gfolds)]
        tars[str(far)] = {
            "tar": float((genuine >= thr).mean()),
            "threshold": thr,
            "per_fold": per_fold,
            "fold_mean": float(np.mean(per_fold)),
            "fold_std": float(np.std(per_fold)),
        }
    kf = kfold_accuracy(scores, labels, folds)
    thr_of = dict(zip(kf.fold_ids, kf.thresholds, strict=True))
    right = np.array([(s >= thr_of[p.fold]) == p.same for p, s in zip(pairs, scores, strict=True)])
    groups = np.array(pair_groups(pairs, photos))
    by_group = []
    for g in sorted(set(groups), key=_group_key):
        sel = groups == g
        by_group.append(
            {
                "bin": g,
                "pairs": int(sel.sum()),
                "genuine": int(labels[sel].sum()),
                "accuracy": float(right[sel].mean()),
            }
        )
    return {"impostors_all": int(len(impostors)), "tar_at_far_all": tars, "by_group": by_group}


def _group_key(group: str) -> tuple[int, float]:
    if group.startswith("yaw "):
        return 0, float(group[4:].split("-")[0])
    return (1, 0.0) if group == AGE_GROUP else (2, 0.0)
