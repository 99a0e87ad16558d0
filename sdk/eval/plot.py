"""ROC plots. matplotlib is optional (extra ``plot``) and imported only when plotting."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import InvalidArgumentError, MissingExtraError

logger = logging.getLogger(__name__)


def plot_roc(
    curves: Mapping[str, Sequence[Any]],
    path: str | Path,
    title: str = "ROC",
    min_far: float | None = None,
) -> Path:
    """Write ROC curves to a PNG with a logarithmic FAR axis.

    Points with FAR = 0 cannot be drawn on a log axis and are left out.

    Args:
        curves: ``{legend label: (far, tar)}``; a ``(far, tar, thresholds)`` triple from
            :func:`npcface.eval.roc_curve` is accepted too (extra items are ignored).
        path: output PNG file; missing parent folders are created.
        title: plot title.
        min_far: left end of the FAR axis; default the smallest positive FAR of any curve.

    Returns:
        The path written.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'npcface[plot]'``).
        ValueError: ``curves`` is empty or a curve's arrays have different lengths.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("ROC plots", "plot", "matplotlib") from exc
    if not curves:
        raise InvalidArgumentError("plot_roc needs at least one curve")

    # a Figure with its own Agg canvas: no pyplot, no change to the global backend
    figure = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    smallest = np.inf
    lowest_tar = 1.0
    for label, curve in curves.items():
        far = np.asarray(curve[0], dtype=np.float64)
        tar = np.asarray(curve[1], dtype=np.float64)
        if far.shape != tar.shape or far.ndim != 1:
            raise InvalidArgumentError(
                f"curve {label!r}: far and tar must be 1-D of equal length, "
                f"got {far.shape} and {tar.shape}"
            )
        keep = far > 0
        if keep.any():
            smallest = min(smallest, float(far[keep].min()))
        axes.plot(far[keep], tar[keep], label=str(label), linewidth=1.5)
        if keep.any():
            lowest_tar = min(lowest_tar, float(tar[keep].min()))
    axes.set_xscale("log")
    left = min_far if min_far is not None else (smallest if np.isfinite(smallest) else 1e-6)
    axes.set_xlim(left, 1.0)
    # zoom on the part of the TAR axis the curves use: strong models live near 1.0
    bottom = max(0.0, np.floor((lowest_tar - 0.02) * 50) / 50)
    axes.set_ylim(bottom, 1.002)
    axes.set_xlabel("False accept rate (FAR)")
    axes.set_ylabel("True accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    logger.debug("wrote ROC plot with %d curve(s) to %s", len(curves), out)
    return out
