"""Parity of an exported model with its source, measured through the SDK's own embedder.

The reference side feeds crops preprocessed with the facts the model was *trained* with
(``reference_info``) into the source model: a torch module, or for third-party models the
original ONNX file. The exported side is :class:`npcface.embed.Embedder` on the exported
file, which preprocesses by the file's *metadata*. So a wrong mean, std or colour order in
the metadata fails the check, as does a numerically broken graph or a batch axis that is
not really dynamic (every batch size in ``batch_sizes`` is run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import NpcfaceError
from npcface.modelinfo import RecognizerInfo

from .crops import preprocess_crops

log = logging.getLogger(__name__)

MIN_COSINE_FP32 = 0.9999
"""Parity threshold for fp32 exports (issue 5): every crop's cosine with the reference."""

MAX_REL_DIFF_FP32 = 1e-3
"""Largest |exported - reference| allowed, relative to the largest |reference| output."""


@dataclass(frozen=True)
class ParityReport:
    """Result of :func:`check_parity`.

    Attributes:
        num_crops: crops compared.
        batch_sizes: batch sizes the exported model was run with.
        max_abs_diff: largest |exported - reference| over raw (unnormalised) outputs, all
            batch sizes.
        reference_max_abs: largest |reference output| (scale for ``max_abs_diff``).
        min_cosine: smallest cosine similarity between an exported and a reference embedding,
            over all batch sizes and the embedder's own ``embed()``.
        mean_cosine: mean of those cosines.
        min_cosine_required: the pass threshold for ``min_cosine``.
        max_rel_diff_allowed: the pass threshold for ``max_abs_diff / reference_max_abs``.
        passed: both thresholds held.
    """

    num_crops: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    reference_max_abs: float
    min_cosine: float
    mean_cosine: float
    min_cosine_required: float
    max_rel_diff_allowed: float
    passed: bool

    @property
    def max_rel_diff(self) -> float:
        """``max_abs_diff`` relative to the largest reference output."""
        return self.max_abs_diff / max(self.reference_max_abs, 1e-12)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"parity {verdict} on {self.num_crops} crops, batches {list(self.batch_sizes)}: "
            f"max |diff| {self.max_abs_diff:.3g} (relative {self.max_rel_diff:.3g}, allowed "
            f"{self.max_rel_diff_allowed:g}), min cosine {self.min_cosine:.6f} (required "
            f"{self.min_cosine_required:g}), mean cosine {self.mean_cosine:.6f}"
        )


class ParityError(NpcfaceError):
    """An exported model does not reproduce its source; ``report`` holds the figures."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


Reference = Any  # torch.nn.Module | str | os.PathLike | Callable[[np.ndarray], np.ndarray]


def reference_function(
    model: Reference, threads: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function (N, 3, S, S) float32 -> (N, d) float32 running the source model.

    Args:
        model: a torch module (run in eval mode, no grad, on the CPU), a path to a
            reference ONNX file (ONNX Runtime, or OpenCV DNN one crop at a time when ONNX
            Runtime refuses the file, as it does OpenCV's shipped SFace), or a callable.
        threads: CPU threads for an ONNX reference.
    """
    if isinstance(model, (str, os.PathLike)):
        return _onnx_reference(Path(model), threads)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        module = model.eval()

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(np.ascontiguousarray(x)))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return out.float().cpu().numpy().reshape(len(x), -1)

        return run_torch
    if callable(model):
        return lambda x: np.asarray(model(x), np.float32).reshape(len(x), -1)
    raise TypeError(f"reference must be a torch module, an ONNX path or a callable, not {model!r}")


def _onnx_reference(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime on the original file; a file that declares unused graph inputs (OpenCV's
    SFace declares its weights as inputs) has only those dropped
    (:func:`npcface.modelprep.drop_dangling_inputs`), its graph otherwise untouched."""
    import onnx
    import onnxruntime as ort

    from npcface.errors import ModelError
    from npcface.modelprep import drop_dangling_inputs

    proto = onnx.load(str(path))
    dropped = drop_dangling_inputs(proto)
    if dropped:
        log.info("reference %s: %d unused graph inputs dropped", path.name, dropped)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot run the reference {path}: {exc}") from exc
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(x: np.ndarray) -> np.ndarray:
        step = fixed or len(x)
        parts = [session.run(None, {inp.name: x[i : i + step]})[0] for i in range(0, len(x), step)]
        return np.concatenate([np.asarray(p, np.float32).reshape(len(p), -1) for p in parts])

    return run


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def check_parity(
    model: Reference,
    onnx_path: str | os.PathLike[str],
    crops: np.ndarray,
    *,
    reference_info: RecognizerInfo | None = None,
    info: RecognizerInfo | None = None,
    batch_sizes: Sequence[int] = (1, 7),
    min_cosine: float = MIN_COSINE_FP32,
    max_rel_diff: float = MAX_REL_DIFF_FP32,
    raise_on_failure: bool = False,
    threads: int | None = None,
) -> ParityReport:
    """Compare a source model with its exported file, through :class:`npcface.embed.Embedder`.

    Args:
        model: the source: a torch module, a reference ONNX path, or a callable (see
            :func:`reference_function`).
        onnx_path: the exported file.
        crops: (N, S, S, 3) uint8 BGR aligned crops (real faces: random noise hides
            normalisation errors that real images expose).
        reference_info: preprocessing the source model was trained with. Defaults, for a
            torch source, to the NPCFace training normalisation (RGB, (x - 127.5) / 128,
            what ``npcface train`` uses) at the exported file's input size; for an ONNX
            source, to the exported file's own facts (a third-party model's facts come from
            its registry entry or the user, so only the graph is being checked).
        info: model facts for an exported file that carries no metadata.
        batch_sizes: batch sizes to run the exported model with, besides all crops at once.
        min_cosine: pass threshold on the smallest per-crop cosine.
        max_rel_diff: pass threshold on max |difference| / max |reference|.
        raise_on_failure: raise :class:`ParityError` instead of returning a failed report.
        threads: CPU threads for ONNX Runtime.

    Returns:
        The :class:`ParityReport`.

    Raises:
        ParityError: parity is broken and ``raise_on_failure`` is set.
        ValueError: no crops, or crops of the wrong shape.
    """
    from npcface.embed import Embedder

    crops = np.asarray(crops)
    if crops.ndim != 4 or len(crops) == 0:
        raise ValueError(
            f"check_parity needs a non-empty (N, S, S, 3) crop batch, got {crops.shape}"
        )
    embedder = Embedder(
        onnx_path, info=info, backend="onnxruntime", providers="cpu", threads=threads
    )
    if reference_info is None and isinstance(model, (str, os.PathLike)):
        reference_info = embedder.info
    elif reference_info is None:
        reference_info = RecognizerInfo(
            name=embedder.info.name,
            input_size=embedder.info.input_size,
            embedding_size=embedder.info.embedding_size,
        )
    ref = reference_function(model, threads)(preprocess_crops(crops, reference_info))
    bad_ref = int((~np.isfinite(ref).all(axis=1)).sum())
    if bad_ref:  # max() would skip NaN differences and report "max |diff| 0"
        raise ParityError(
            f"the source model gives NaN/inf embeddings for {bad_ref} of {len(ref)} crops; "
            "its weights are broken (a diverged training run?), there is nothing to compare",
            _failed(len(crops), batch_sizes, min_cosine, max_rel_diff),
        )

    x = embedder.preprocess(crops)
    sizes = sorted({int(b) for b in batch_sizes if 0 < int(b) <= len(crops)} | {len(crops)})
    max_abs = 0.0
    cosines = []
    for b in sizes:
        out = np.concatenate(
            [
                np.asarray(embedder.runner.run(x[i : i + b])[0], np.float32).reshape(
                    -1, ref.shape[1]
                )
                for i in range(0, len(x), b)
            ]
        )
        if out.shape != ref.shape:
            raise ParityError(
                f"{onnx_path} gives outputs of shape {out.shape} at batch {b}, the source "
                f"{ref.shape}",
                _failed(len(crops), sizes, min_cosine, max_rel_diff),
            )
        diff = float(np.abs(out - ref).max())
        max_abs = max(max_abs, diff if np.isfinite(diff) else float("inf"))
        cosines.append(_rowwise_cosine(out, ref))
    emb = embedder.embed(crops)
    cosines.append(_rowwise_cosine(emb, ref))
    cos = np.nan_to_num(np.concatenate(cosines), nan=-1.0)  # a NaN output fails the check
    ref_max = float(np.abs(ref).max())
    report = ParityReport(
        num_crops=len(crops),
        batch_sizes=tuple(sizes),
        max_abs_diff=max_abs,
        reference_max_abs=ref_max,
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        min_cosine_required=float(min_cosine),
        max_rel_diff_allowed=float(max_rel_diff),
        passed=bool(cos.min() >= min_cosine and max_abs <= max_rel_diff * max(ref_max, 1e-12)),
    )
    log.info("%s: %s", Path(onnx_path).name, report.summary())
    if raise_on_failure and not report.passed:
        raise ParityError(
            f"{onnx_path} does not reproduce its source: {report.summary()}. Check the "
            "metadata's mean/std/channel order against the training configuration",
            report,
        )
    return report


def _failed(n: int, sizes: Sequence[int], min_cosine: float, max_rel: float) -> ParityReport:
    return ParityReport(
        num_crops=n,
        batch_sizes=tuple(sizes),
        max_abs_diff=float("inf"),
        reference_max_abs=0.0,
        min_cosine=-1.0,
        mean_cosine=-1.0,
        min_cosine_required=min_cosine,
        max_rel_diff_allowed=max_rel,
        passed=False,
    )
