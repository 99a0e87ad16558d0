"""Evaluation protocols and metrics in plain numpy (no torch, no sklearn).

Scores are similarities (higher = more alike) and a pair is accepted when
``score >= threshold``. Used by ``npcface eval`` and by training.
"""

from npcface.eval.metrics import (
    KFoldResult,
    VerificationReport,
    auc,
    best_threshold,
    evaluate_verification,
    kfold_accuracy,
    rank_k_accuracy,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    tpir_at_fpir,
)
from npcface.eval.pairs import (
    Pair,
    PairsFormatError,
    lfw_image_path,
    read_lfw_pairs,
    read_pairs_csv,
)
from npcface.eval.plot import plot_roc

__all__ = [
    "KFoldResult",
    "Pair",
    "PairsFormatError",
    "VerificationReport",
    "auc",
    "best_threshold",
    "evaluate_verification",
    "kfold_accuracy",
    "lfw_image_path",
    "plot_roc",
    "rank_k_accuracy",
    "read_lfw_pairs",
    "read_pairs_csv",
    "roc_curve",
    "tar_at_far",
    "threshold_at_far",
    "tpir_at_fpir",
]
