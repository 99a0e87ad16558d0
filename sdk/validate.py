"""One rule for the numbers users hand to npcface: thresholds and embeddings.

Used by ``verify``, ``compare``, ``identify`` and the gallery, so a value refused in one
place is refused everywhere with the same words.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import EmbeddingError, InvalidArgumentError


def check_threshold(threshold: Any, what: str = "threshold") -> float:
    """A decision threshold as a float, or :class:`InvalidArgumentError`.

    A threshold is a cosine similarity: a finite number in [-1, 1]; higher is stricter
    (fewer pairs are called the same person). Percentages (60), NaN and infinities are refused.

    Raises:
        InvalidArgumentError: not a number, not finite or outside [-1, 1].
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{what} must be a number (a cosine similarity in [-1, 1]), got {threshold!r}",
            input=what,
        ) from None
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidArgumentError(
            f"{what} {threshold!r} is not a cosine similarity: use a finite number in [-1, 1] "
            "(higher is stricter; e.g. the model's default_threshold())",
            input=what,
        )
    return value


def check_embeddings(x: Any, dim: int | None = None, what: str = "embedding") -> np.ndarray:
    """Float32 (N, d) copy of one (d,) or many (N, d) embeddings, or :class:`EmbeddingError`.

    The rule: numeric, 1-D or 2-D, ``d == dim`` when given, every value finite and no row
    all zero (a zero vector has no direction, so its cosine with anything is undefined).
    Rows are not normalised here.

    Raises:
        EmbeddingError: wrong shape or dimension, non-numeric, non-finite or all-zero rows.
    """
    arr = np.asarray(x)
    if not (
        np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise EmbeddingError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise EmbeddingError(f"{what} must be a (d,) or (n, d) array, got shape {np.shape(x)}")
    if dim is not None and arr.shape[1] != dim:
        raise EmbeddingError(
            f"{what} has {arr.shape[1]} dimensions, the model gives {dim}; compare embeddings "
            "of the same model"
        )
    arr = np.array(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise EmbeddingError(f"{what} contains NaN or infinite values")
    if np.any(~arr.any(axis=1)):
        raise EmbeddingError(f"{what} is an all-zero vector (no direction to compare)")
    return arr


def is_embedding_like(x: Any) -> bool:
    """True for a 1-D array or a single (1, d) row: what ``represent`` / ``represent_all`` /
    ``embed_crops`` return. Images have at least two rows and columns, so no image is taken
    for an embedding."""
    return isinstance(x, np.ndarray) and (x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1))
