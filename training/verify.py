"""Verification of a backbone on a pairs protocol (LFW ``pairs.txt`` or a CSV pair list).

The pairs point at aligned crops (what ``npcface train prepare`` writes, in LFW layout
``root/images/<name>/<name>_NNNN.jpg``). Embeddings are cosine-compared; accuracy is the
10-fold protocol of :func:`npcface.eval.kfold_accuracy` (threshold chosen on nine folds,
applied to the tenth).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from npcface.eval import kfold_accuracy, read_lfw_pairs, read_pairs_csv

from .config import EvalConfig
from .errors import DataError

__all__ = ["PairVerifier", "VerificationResult", "embed_crops"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerificationResult:
    """Accuracy over folds (fractions in [0, 1]) and how many pairs were scored/skipped."""

    accuracy: float
    std: float
    num_pairs: int
    skipped_pairs: int
    thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": self.accuracy,
            "std": self.std,
            "num_pairs": self.num_pairs,
            "skipped_pairs": self.skipped_pairs,
            "mean_threshold": float(np.mean(self.thresholds)) if self.thresholds else 0.0,
        }


@torch.no_grad()
def embed_crops(
    model: nn.Module,
    crops_rgb: np.ndarray,
    *,
    mean: float = 127.5,
    std: float = 128.0,
    batch_size: int = 128,
    flip_fusion: bool = True,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> np.ndarray:
    """L2-normalised embeddings (M, D) float32 of (M, S, S, 3) uint8 RGB crops.

    ``flip_fusion`` adds the embedding of the mirrored crop before normalising.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    out = []
    amp = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        for i in range(0, len(crops_rgb), batch_size):
            x = torch.from_numpy(crops_rgb[i : i + batch_size]).to(device)
            x = x.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
            if not channels_last:
                x = x.contiguous()
            with amp:
                e = model(x).float()
                if flip_fusion:
                    e = e + model(x.flip(3)).float()
            out.append(F.normalize(e, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


class PairVerifier:
    """Loads a pairs protocol's crops once, then scores any backbone on it.

    Args:
        cfg: the eval section of a training config (root, pairs file, protocol...).
        size: crop side the backbone expects (crops of another size are resized).
    """

    def __init__(self, cfg: EvalConfig, size: int) -> None:
        self.cfg, self.size = cfg, size
        root = Path(cfg.root)
        if cfg.protocol == "lfw":
            pairs_file = cfg.pairs_file or "pairs.txt"
            pairs = read_lfw_pairs(root, pairs_file)
        else:
            pairs = read_pairs_csv(cfg.pairs_file, root)
        if cfg.max_pairs > 0:
            pairs = pairs[: cfg.max_pairs]
        present = [p for p in pairs if Path(p.path1).is_file() and Path(p.path2).is_file()]
        self.skipped = len(pairs) - len(present)
        if self.skipped:
            log.warning(
                "%d of %d pairs skipped: crop missing under %s", self.skipped, len(pairs), root
            )
        if not present:
            raise DataError(f"no verification pair has both crops under {root}")
        paths = sorted({str(p.path1) for p in present} | {str(p.path2) for p in present})
        index = {p: i for i, p in enumerate(paths)}
        self.crops = np.stack([self._load(p) for p in paths])
        self.i1 = np.array([index[str(p.path1)] for p in present])
        self.i2 = np.array([index[str(p.path2)] for p in present])
        self.labels = np.array([p.same for p in present], dtype=bool)
        self.folds = np.array([p.fold for p in present])
        if len(np.unique(self.folds)) < 2:  # single-fold lists: 10 interleaved folds
            self.folds = np.arange(len(present)) % 10

    def _load(self, path: str) -> np.ndarray:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read crop {path}")
        if img.shape[:2] != (self.size, self.size):
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB

    def scores(self, model: nn.Module, **embed_kwargs) -> np.ndarray:
        """Cosine similarity of every scored pair."""
        emb = embed_crops(model, self.crops, **embed_kwargs)
        return np.sum(emb[self.i1] * emb[self.i2], axis=1)

    def __call__(self, model: nn.Module, **embed_kwargs) -> VerificationResult:
        embed_kwargs.setdefault("flip_fusion", self.cfg.flip_fusion)
        embed_kwargs.setdefault("batch_size", self.cfg.batch_size)
        scores = self.scores(model, **embed_kwargs)
        res = kfold_accuracy(scores, self.labels, self.folds)
        return VerificationResult(
            float(res.mean), float(res.std), len(scores), self.skipped, tuple(res.thresholds)
        )
