"""Verification on any pair list (``npcface eval pairs``), with accuracy by yaw bin when the
photos' yaws are known (the pose benchmark of :mod:`npcface.eval.pose`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .lfw import embed_paths, pair_scores
from .metrics import evaluate_verification, kfold_accuracy
from .pairs import Pair


def run_pair_verification(
    recognizer: Any,
    pairs: Sequence[Pair],
    yaws: dict[Path, float] | None = None,
    suite: Sequence[Any] | None = None,
    policy: str | None = None,
    progress: bool = True,
    plot: str | os.PathLike[str] | None = None,
    fars: Sequence[float] = (1e-2,),
) -> dict[str, Any]:
    """k-fold verification of ``recognizer`` on ``pairs`` (folds from the pairs); a
    JSON-friendly report. Images without a face score -1 (a sure "different"), and are counted.

    Args:
        recognizer: a :class:`~npcface.FaceRecognizer`.
        pairs: the pairs, with fold ids (at least two folds).
        yaws: ``{path: yaw degrees}``; adds ``by_yaw`` (accuracy per |yaw| bin).
        suite: the hard-pairs suite's photos (:func:`npcface.eval.hard.read_suite`); adds
            ``suite`` (:func:`npcface.eval.hard.suite_report`: TAR at FAR 1e-3 and 1e-4 over
            every impostor pair of the suite, per fold; accuracy by group), whose photos are
            embedded too, and the plot shows its groups.
        policy: face policy (default: the recogniser's).
        progress: show a progress bar.
        plot: write the bar chart by yaw bin (or by suite group) here (needs ``yaws`` or
            ``suite``).
        fars: FARs at which TAR is reported.
    """
    from .hard import GROUP_XLABEL
    from .pose import accuracy_by_yaw, plot_accuracy_by_group, plot_accuracy_by_yaw

    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    if suite is not None:
        paths = sorted(set(paths) | {s.path for s in suite})
    table = embed_paths(recognizer, paths, policy=policy, progress=progress)
    scores = pair_scores(pairs, table)
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    report = evaluate_verification(scores, labels, folds, fars=tuple(fars)).to_dict()
    report.update(
        {
            "model": recognizer.info.name,
            "preset": getattr(recognizer, "preset", None),
            "flip": bool(recognizer.flip),
            "face_policy": policy or recognizer.face_policy,
            "pairs": len(pairs),
            "images": len(paths),
            "failed_detections": len(table.failed),
            "failed_images": sorted(str(p) for p in table.failed),
            "ms_per_image": 1000.0 * table.seconds / max(len(paths), 1),
        }
    )
    name = f"{recognizer.info.name} ({100 * report['accuracy_mean']:.2f}%)"
    if yaws is not None:
        kf = kfold_accuracy(scores, labels, folds)
        by_fold = dict(zip(kf.fold_ids, kf.thresholds, strict=True))
        report["by_yaw"] = accuracy_by_yaw(pairs, scores, by_fold, yaws)
        if plot and suite is None:
            report["plot"] = str(plot_accuracy_by_yaw({name: report["by_yaw"]}, plot))
    if suite is not None:
        from .hard import suite_report

        embeddings = {p: table.embeddings[i] for i, p in enumerate(table.paths)}
        for p in table.failed:
            del embeddings[p]
        report["suite"] = suite_report(pairs, scores, suite, embeddings)
        if plot:
            groups = {name: report["suite"]["by_group"]}
            report["plot"] = str(plot_accuracy_by_group(groups, plot, xlabel=GROUP_XLABEL))
    return report
