"""LFW-style verification through the full pipeline: image -> face -> crop -> embedding -> score.

Missed detections are never dropped silently: each is counted and named in the report, and
a pair with an image that has no embedding scores -1 (a certain "different" decision), so the
accuracy reported is that of the whole pipeline on all 6,000 pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import evaluate_verification, roc_curve
from .pairs import Pair, read_lfw_pairs

log = logging.getLogger(__name__)

MISSING_SCORE = -1.0


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings of a set of image paths; rows of ``failed`` images are zero."""

    paths: list[Path]
    embeddings: np.ndarray
    failed: dict[Path, str]
    seconds: float

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}


def embed_paths(
    recognizer: Any,
    paths: Sequence[Path],
    policy: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    on_batch: Callable[[int, float], None] | None = None,
) -> EmbeddingTable:
    """Embed one face per image through the recogniser's one pipeline (``embed_many``).

    Images without a usable face (unreadable, no face) are listed in ``failed``; their rows
    stay zero.

    Args:
        recognizer: a :class:`~npcface.FaceRecognizer`.
        paths: image files.
        policy: face policy (default: the recogniser's).
        batch_size: crops per recogniser call.
        progress: show a tqdm bar.
        on_batch: called after each batch with (images done, seconds so far).
    """
    import time

    from tqdm import tqdm

    dim = recognizer.info.embedding_size
    out = np.zeros((len(paths), dim), np.float32)
    failed: dict[Path, str] = {}
    t0 = time.perf_counter()
    with tqdm(total=len(paths), desc="embedding", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = [Path(p) for p in paths[start : start + batch_size]]
            for r in recognizer.embed_many(
                chunk, policy=policy, names=[str(p) for p in chunk], batch_size=batch_size
            ):
                if r.ok:
                    out[start + r.index] = r.embedding
                else:
                    failed[chunk[r.index]] = str(r.error)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(start + len(chunk), time.perf_counter() - t0)
    return EmbeddingTable(list(map(Path, paths)), out, failed, time.perf_counter() - t0)


def pair_scores(pairs: Sequence[Pair], table: EmbeddingTable) -> np.ndarray:
    """Cosine similarity per pair; :data:`MISSING_SCORE` where an image failed."""
    idx = table.index()
    a = np.array([idx[p.path1] for p in pairs])
    b = np.array([idx[p.path2] for p in pairs])
    scores = (table.embeddings[a] * table.embeddings[b]).sum(axis=1)
    bad = np.array([p.path1 in table.failed or p.path2 in table.failed for p in pairs])
    scores[bad] = MISSING_SCORE
    return scores


def run_lfw_verification(
    recognizer: Any,
    lfw_dir: str | Path,
    pairs_file: str = "pairs.txt",
    policy: str | None = "center",
    progress: bool = True,
    plot: str | Path | None = None,
    fars: Sequence[float] = (1e-3, 1e-2),
) -> dict[str, Any]:
    """10-fold LFW verification of ``recognizer``; a JSON-friendly report.

    ``policy="center"`` by default: LFW images are centred on the labelled person and often
    contain others, which is exactly what that policy is for.
    """
    pairs = read_lfw_pairs(lfw_dir, pairs_file)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    table = embed_paths(recognizer, paths, policy=policy, progress=progress)
    scores = pair_scores(pairs, table)
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    report = evaluate_verification(scores, labels, folds, fars=tuple(fars)).to_dict()
    report.update(
        {
            "model": recognizer.info.name,
            "flip": bool(recognizer.flip),
            "face_policy": policy,
            "pairs": len(pairs),
            "images": len(paths),
            "failed_detections": len(table.failed),
            "failed_images": sorted(str(p) for p in table.failed),
            "ms_per_image": 1000.0 * table.seconds / max(len(paths), 1),
        }
    )
    if plot:
        from .plot import plot_roc

        far, tar, _ = roc_curve(scores, labels)
        acc = report["accuracy_mean"]
        plot_roc(
            {f"{recognizer.info.name} (acc {100 * acc:.2f}%)": (far, tar)},
            plot,
            title="LFW verification ROC",
        )
        report["plot"] = str(plot)
    return report
