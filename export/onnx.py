"""Torch model or third-party ONNX file -> self-describing ONNX file the SDK runs directly.

- :func:`export_onnx`: a torch module to ONNX with a dynamic batch axis declared to the
  exporter (no graph surgery), opset >= 17, optional simplification (onnxslim), and the
  npcface metadata (:class:`~npcface.modelinfo.RecognizerInfo`) that
  :class:`npcface.embed.Embedder` reads.
- :func:`export_third_party`: a shipped ONNX recogniser made dynamic-batch fp32 by the SDK's
  own recipe (:func:`npcface.modelprep.prepare_recognizer`) and given metadata.
- :func:`export_checked`: either of the above followed by :func:`~npcface.export.parity.check_parity`
  on real aligned crops; the output file appears only when parity holds.

Torch is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import MissingExtraError, ModelError
from npcface.fsutil import atomic_path
from npcface.modelinfo import RecognizerInfo, read_onnx_info, write_onnx_info
from npcface.models import sha256_file as file_sha256

from .parity import MAX_REL_DIFF_FP32, MIN_COSINE_FP32, ParityError, ParityReport, check_parity

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
"""Opset of the torch.export-based exporter (the TorchScript fallback uses 17)."""
MIN_OPSET = 17
MAX_OPSET = 20
"""Highest opset both torch exporters write (the TorchScript fallback stops at 20)."""
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
BATCH_AXIS = "batch"

_INFO_FIELDS = {f.name for f in fields(RecognizerInfo)}


class OpsetError(ModelError, ValueError):
    """An ONNX opset outside what the export supports (``MIN_OPSET`` .. ``MAX_OPSET``)."""


def check_opset(opset: int | None) -> None:
    """Refuse an opset the export cannot write.

    Raises:
        OpsetError: ``opset`` is not None and not within ``MIN_OPSET`` .. ``MAX_OPSET``.
    """
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise OpsetError(
            f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET} "
            f"(default {DEFAULT_OPSET}; {MIN_OPSET} with the TorchScript exporter)"
        )


def import_torch() -> Any:
    """``import torch``, or :class:`MissingExtraError` naming the ``export`` extra."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("npcface export", "export", "torch") from None
    return torch


def make_info(
    metadata: RecognizerInfo | Mapping[str, Any] | None,
    name: str,
    input_size: int,
    embedding_size: int,
) -> RecognizerInfo:
    """Model facts for an export, checked against the real model.

    Args:
        metadata: a :class:`RecognizerInfo`, or a mapping of its fields (other keys go to
            ``extra``), or None for the NPCFace training defaults (RGB, (x - 127.5) / 128).
        name: model name when ``metadata`` gives none.
        input_size: the input side the model was exported with.
        embedding_size: the embedding length the model really produces.

    Raises:
        ValueError: ``metadata`` contradicts the model (input or embedding size).
    """
    if metadata is None:
        info = RecognizerInfo(name=name, input_size=input_size, embedding_size=embedding_size)
    elif isinstance(metadata, RecognizerInfo):
        info = metadata
    else:
        known = {k: v for k, v in metadata.items() if k in _INFO_FIELDS}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in metadata.items() if k not in _INFO_FIELDS})
        known.setdefault("name", name)
        known.setdefault("input_size", input_size)
        known.setdefault("embedding_size", embedding_size)
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        info = RecognizerInfo(**known, extra=extra)
    if info.input_size != input_size:
        raise ValueError(
            f"metadata says input size {info.input_size}, the export uses {input_size}"
        )
    if info.embedding_size != embedding_size:
        raise ValueError(
            f"metadata says embedding size {info.embedding_size}, the model produces {embedding_size}"
        )
    return info


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_export(
    model: Any, sample: Any, dst: Path, opset: int | None, exporter: str
) -> tuple[str, int]:
    """Write ``model`` to ``dst`` with a dynamic batch axis; returns (exporter, opset) used."""
    import torch

    if exporter == "auto":
        exporter = "dynamo" if _has_onnxscript() else "torchscript"
    if exporter == "dynamo":
        opset = opset or DEFAULT_OPSET
        chatter = io.StringIO()  # the exporter prints progress lines to stdout
        quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed" is irrelevant here
        try:
            with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.onnx.export(
                    model,
                    (sample,),
                    str(dst),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
                    external_data=False,
                )
        finally:
            quiet.setLevel(level)
        log.debug("torch.onnx: %s", chatter.getvalue().strip())
    elif exporter == "torchscript":
        opset = opset or MIN_OPSET
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (sample,),
                str(dst),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
                do_constant_folding=True,
            )
    else:
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', not {exporter!r}")
    return exporter, opset


def simplify_model(model: Any) -> Any:
    """Simplify an ``onnx.ModelProto`` with onnxslim (or onnxsim); unchanged when neither is installed."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        return onnxslim.slim(model)
    try:
        import onnxsim
    except ImportError:
        log.warning("neither onnxslim nor onnxsim is installed: the graph is not simplified")
        return model
    simplified, ok = onnxsim.simplify(model)
    return simplified if ok else model


def _batch_is_dynamic(model: Any) -> bool:
    dims = [
        v.type.tensor_type.shape.dim for v in list(model.graph.input) + list(model.graph.output)
    ]
    return all(d and d[0].dim_param and not d[0].HasField("dim_value") for d in dims)


def save_with_info(model: Any, info: RecognizerInfo, path: str | os.PathLike[str]) -> Path:
    """Check ``model``, attach ``info`` and save it atomically to ``path``."""
    import onnx

    write_onnx_info(model, info)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def export_onnx(
    model: Any,
    path: str | os.PathLike[str],
    input_size: int = 120,
    metadata: RecognizerInfo | Mapping[str, Any] | None = None,
    *,
    opset: int | None = None,
    simplify: bool = True,
    exporter: str = "auto",
) -> Path:
    """Export a torch embedding model to a self-describing ONNX file.

    The batch axis is declared dynamic to the exporter (``dynamic_shapes`` for the
    torch.export-based exporter, ``dynamic_axes`` for the TorchScript one), so any batch
    size runs.

    Args:
        model: ``torch.nn.Module`` mapping (N, 3, S, S) float32 to (N, d) embeddings.
        path: output ``.onnx`` file.
        input_size: side S of the input crop (120 for npcface models).
        metadata: model facts (see :func:`make_info`); the input and embedding sizes are
            checked against the model.
        opset: ONNX opset, 17 to 20 (default 18, or 17 with the TorchScript exporter).
        simplify: run onnxslim (or onnxsim) on the graph.
        exporter: "auto" (torch.export-based when onnxscript is installed, else
            TorchScript), "dynamo" or "torchscript".

    Returns:
        The written path.

    Raises:
        MissingExtraError: torch is not installed.
        OpsetError: opset outside 17..20 (a :class:`ModelError` and a ``ValueError``).
        ValueError: metadata contradicting the model.
        ModelError: the exported graph does not have a dynamic batch axis.
    """
    torch = import_torch()
    import onnx

    check_opset(opset)
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        sample = torch.randn(
            2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)
        )
        with torch.inference_mode():
            out = model(sample)
        embedding_size = int(out.reshape(2, -1).shape[1])
        info = make_info(metadata, path.stem, input_size, embedding_size)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.onnx"
            used, opset = _torch_export(model, sample, raw, opset, exporter)
            proto = onnx.load(str(raw))
    finally:
        model.train(was_training)
    if simplify:
        proto = simplify_model(proto)
    if not _batch_is_dynamic(proto):
        raise ModelError(f"the {used} exporter did not keep the batch axis of {path.name} dynamic")
    extra = {
        "precision": "fp32",
        "exporter": f"torch {torch.__version__} ({used})",
        "opset": opset,
        "simplified": bool(simplify),
    }
    info = replace(info, extra={**extra, **info.extra})
    save_with_info(proto, info, path)
    log.info("exported %s (%s, opset %d, %s)", path, used, opset, info.name)
    return path


def export_third_party(
    src: str | os.PathLike[str],
    path: str | os.PathLike[str],
    info: RecognizerInfo,
    *,
    simplify: bool = False,
) -> Path:
    """A dynamic-batch fp32 copy of a third-party ONNX recogniser, with npcface metadata.

    Uses the SDK's recipe :func:`npcface.modelprep.prepare_recognizer` (dangling inputs
    dropped, block-quantised weights folded to fp32, batch axis made symbolic).

    Args:
        src: the original ONNX file.
        path: output file.
        info: the model's facts (from the registry, ``get_model_spec(name).info``, or given).
        simplify: also run onnxslim/onnxsim.

    Returns:
        The written path.
    """
    import onnx

    from npcface.modelprep import prepare_recognizer

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        steps = prepare_recognizer(str(src), str(prepared))
        proto = onnx.load(str(prepared))
    if simplify:
        proto = simplify_model(proto)
    extra = {
        "precision": "fp32",
        "source_file": Path(src).name,
        "source_sha256": file_sha256(src),
        "prepared_by": "npcface.modelprep.prepare_recognizer",
        "preparation": steps,
    }
    info = replace(info, extra={**info.extra, **extra})
    save_with_info(proto, info, path)
    log.info("prepared third-party %s -> %s (%s)", src, path, steps)
    return path


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checked` produced.

    Attributes:
        path: the exported file.
        info: the metadata written into it.
        parity: the parity report (None when the check was skipped).
    """

    path: Path
    info: RecognizerInfo
    parity: ParityReport | None


def export_checked(
    source: Any,
    path: str | os.PathLike[str],
    crops: np.ndarray | None,
    *,
    info: RecognizerInfo | Mapping[str, Any] | None = None,
    input_size: int = 120,
    reference_info: RecognizerInfo | None = None,
    simplify: bool = True,
    opset: int | None = None,
    min_cosine: float = MIN_COSINE_FP32,
    max_rel_diff: float = MAX_REL_DIFF_FP32,
    threads: int | None = None,
) -> ExportResult:
    """Export and check parity; the output appears only when parity holds.

    Args:
        source: a torch module, or the path of a third-party ONNX file (then ``info`` is
            required and must be a :class:`RecognizerInfo`).
        path: output file.
        crops: (N, S, S, 3) uint8 BGR aligned crops for the parity check; None skips it.
        info: model facts (see :func:`export_onnx`).
        input_size: input side for a torch source.
        reference_info: preprocessing the source was trained with (see :func:`check_parity`).
        simplify, opset: see :func:`export_onnx`.
        min_cosine, max_rel_diff: parity thresholds.
        threads: CPU threads for the check.

    Raises:
        ParityError: the exported file does not reproduce the source; it is left next to
            ``path`` as ``<name>.failed.onnx`` for inspection.
    """
    path = Path(path)
    tmp = path.with_name(path.stem + ".unchecked.onnx")
    if isinstance(source, (str, os.PathLike)):
        if not isinstance(info, RecognizerInfo):
            raise ValueError("a third-party ONNX source needs its RecognizerInfo (info=...)")
        export_third_party(source, tmp, info, simplify=simplify)
    else:
        export_onnx(source, tmp, input_size, info, opset=opset, simplify=simplify)
    written = read_onnx_info(str(tmp))
    if written is None:  # pragma: no cover - save_with_info always writes it
        raise ModelError(f"{tmp} lost its npcface metadata")
    report = None
    if crops is not None:
        try:
            report = check_parity(
                source,
                tmp,
                crops,
                reference_info=reference_info,
                batch_sizes=(1, 7),
                min_cosine=min_cosine,
                max_rel_diff=max_rel_diff,
                threads=threads,
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not report.passed:
            failed = path.with_name(path.stem + ".failed.onnx")
            os.replace(tmp, failed)
            raise ParityError(
                f"export of {path.name} broke parity, not written ({failed.name} kept for "
                f"inspection): {report.summary()}",
                report,
            )
    os.replace(tmp, path)
    return ExportResult(path=path, info=written, parity=report)
