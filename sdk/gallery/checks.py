"""Argument checks of the :class:`~npcface.gallery.Gallery` facade, shared by every backend.

Each returns the value in the form the backends take, or raises
:class:`~npcface.errors.GalleryArgumentError` (vectors:
:class:`~npcface.errors.GalleryEmbeddingError`), which are ``ValueError`` s too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ..errors import (
    EmbeddingError,
    GalleryArgumentError,
    GalleryEmbeddingError,
    InvalidArgumentError,
)

NAME_FORM = "NFC"
"""The Unicode form of every identity name (macOS writes folder names in NFD: without it
"Zoë" from a Mac folder and "Zoë" typed elsewhere would be two people)."""

METRICS = ("cosine", "ip")
"""``cosine``: vectors are L2-normalised on the way in, similarity is the cosine in [-1, 1].
``ip``: raw inner product of the vectors as given."""

MAX_NAME_LENGTH = 1024


def prepare_vectors(
    x: Any, what: str, *, dim: int, metric: str, where: str, model: Callable[[], str | None]
) -> np.ndarray:
    """(n, dim) float32 C-contiguous rows, checked; unit rows for ``cosine``.

    Args:
        x: (dim,) or (n, dim) real numbers.
        what: ``embeddings`` or ``queries``, for messages.
        dim: the gallery's dimension.
        metric: the gallery's metric.
        where: names the gallery in messages.
        model: the gallery's embedding model, if recorded (asked only for a message).
    """
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise GalleryEmbeddingError(f"{what} must be a numeric array: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise GalleryEmbeddingError(f"{what} must be (d,) or (n, d), got shape {arr.shape}")
    if arr.shape[1] != dim:
        name = model()
        raise GalleryEmbeddingError(
            f"{what} have dimension {arr.shape[1]}, but the gallery at {where} holds "
            f"{dim}-dimensional vectors"
            + (f" (model {name})" if name else "")
            + "; use the same embedding model for enrolment and search"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise GalleryEmbeddingError(f"{what} must be real numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float32, order="C")
    if not np.all(np.isfinite(arr)):
        raise GalleryEmbeddingError(f"{what} contain NaN or infinite values")
    if metric == "cosine" and len(arr):
        try:  # the one embedding rule (npcface.validate), as verify and compare apply it
            validate.check_embeddings(arr, what=what)
        except EmbeddingError as exc:
            raise GalleryEmbeddingError(str(exc)) from None
        arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    return arr


def check_location(path: Any) -> str | Path:
    if isinstance(path, Path):
        return path
    if isinstance(path, str) and path.strip():
        return path
    if hasattr(path, "__fspath__"):
        return Path(path)
    raise GalleryArgumentError(f"a gallery path must be a non-empty str or Path, got {path!r}")


def check_dim(dim: Any) -> int:
    if isinstance(dim, bool):
        raise GalleryArgumentError(f"dim must be a positive integer, got {dim!r}")
    try:
        value = int(dim)
    except (TypeError, ValueError, OverflowError):
        raise GalleryArgumentError(f"dim must be a positive integer, got {dim!r}") from None
    if value != dim or value < 1:
        raise GalleryArgumentError(f"dim must be a positive integer, got {dim!r}")
    return value


def check_k(k: Any) -> int:
    try:
        ok = not isinstance(k, bool) and int(k) == k and k >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise GalleryArgumentError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_int(value: Any, what: str) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise GalleryArgumentError(f"{what} must be integers, got {value!r}")
    return int(value)


def check_threshold(threshold: Any, metric: str = "cosine") -> float:
    """A finite number; for ``cosine`` galleries the one threshold rule of
    :func:`npcface.validate.check_threshold` (a cosine similarity in [-1, 1]), same words."""
    if isinstance(threshold, bool):
        raise GalleryArgumentError(f"threshold must be a finite number, got {threshold!r}")
    if metric == "cosine":
        try:
            return validate.check_threshold(threshold)
        except InvalidArgumentError as exc:
            raise GalleryArgumentError(str(exc)) from None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise GalleryArgumentError(f"threshold must be a finite number, got {threshold!r}")
    return value


def check_name(name: Any) -> str:
    """An identity name as stored: Unicode NFC (:data:`~npcface.gallery.store.NAME_FORM`),
    1 to :data:`MAX_NAME_LENGTH` characters, not only spaces, no control characters (line
    breaks, tabs, NUL: a name is printed in reports, logs and CSV files). The one check of
    names for the library, the CLI and the service.

    Raises:
        GalleryArgumentError: a name that breaks these rules.
    """
    if not isinstance(name, str) or not name.strip():
        raise GalleryArgumentError(f"identity names must be non-empty strings, got {name!r}")
    name = unicodedata.normalize(NAME_FORM, name)
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryArgumentError(f"identity name longer than {MAX_NAME_LENGTH} characters")
    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise GalleryArgumentError(
            f"identity name {name!r} contains the control character U+{ord(bad):04X}; "
            "use printable text"
        )
    return name


def as_list(items: Any, what: str) -> list[Any]:
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise GalleryArgumentError(f"{what} must be a list, got {type(items).__name__}")
    return list(items)


def texts(items: Any, what: str, n: int) -> list[str | None] | None:
    """None, or one str-or-None per vector."""
    if items is None:
        return None
    values = as_list(items, what)
    if len(values) != n:
        raise GalleryArgumentError(
            f"{what} must have one entry per vector ({n}), got {len(values)}"
        )
    bad = [v for v in values if v is not None and not isinstance(v, str)]
    if bad:
        raise GalleryArgumentError(f"{what} must be strings or None, got {bad[0]!r}")
    return values
