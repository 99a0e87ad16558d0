"""Smaller and faster variants of an exported fp32 model: fp16 and ONNX Runtime static INT8.

Both keep the npcface metadata (with ``extra["precision"]`` updated), so the SDK runs
a variant exactly as it runs the fp32 file. INT8 is calibrated on real aligned crops,
preprocessed by the model's own metadata, never on noise.

Which INT8 layout is fastest depends on the CPU: on x86 with AVX-512 VNNI, ONNX Runtime
runs QLinearConv/QDQ-fused convolutions with u8 x s8 integer dot products. See
``bench/quantize_report.py`` for measurements on the machine at hand.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import MissingExtraError, ModelError
from npcface.modelinfo import RecognizerInfo, read_onnx_info

from .crops import preprocess_crops
from .onnx import save_with_info

log = logging.getLogger(__name__)

QUANT_FORMATS = ("qdq", "qoperator")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def model_info(path: str | os.PathLike[str], info: RecognizerInfo | None = None) -> RecognizerInfo:
    """``info`` if given, else the file's npcface metadata.

    Raises:
        ModelError: neither is available.
    """
    info = info or read_onnx_info(str(path))
    if info is None:
        raise ModelError(
            f"{path} carries no npcface metadata; pass the model's facts (--info NAME or "
            "info=RecognizerInfo(...)) so calibration crops are preprocessed correctly"
        )
    return info


def variant_path(src: str | os.PathLike[str], suffix: str) -> Path:
    """``model.onnx`` -> ``model.<suffix>.onnx`` next to it."""
    src = Path(src)
    return src.with_name(f"{src.stem}.{suffix}.onnx")


def convert_fp16(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    info: RecognizerInfo | None = None,
    keep_io_types: bool = True,
) -> Path:
    """An fp16 copy of an fp32 ONNX model (weights and activations), fp32 input and output.

    Uses ``onnxconverter_common.float16`` when installed, else the copy of it that ships
    with ONNX Runtime (``onnxruntime.transformers.float16``).

    Args:
        src: fp32 ONNX file.
        dst: output file (default ``<src>.fp16.onnx``).
        info: model facts when ``src`` carries none.
        keep_io_types: keep the graph's input and output in fp32 (callers feed fp32).

    Returns:
        The written path.
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        try:
            from onnxruntime.transformers import float16
        except ImportError:
            raise MissingExtraError("fp16 conversion", "export", "onnxconverter-common") from None
    info = model_info(src, info)
    dst = Path(dst) if dst else variant_path(src, "fp16")
    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one warning per tiny weight clipped
        half = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    topological_sort(half.graph)  # some converter versions append the input casts last
    info = replace(info, extra={**info.extra, "precision": "fp16"})
    save_with_info(half, info, dst)
    log.info("fp16 copy of %s -> %s", src, dst)
    return dst


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs.

    Raises:
        ModelError: the graph has a cycle or reads a tensor nothing produces.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(x in available for x in n.input)]
        if not ready:
            missing = sorted({x for n in pending for x in n.input} - available)[:5]
            raise ModelError(f"cannot order the graph: inputs {missing} are never produced")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            ordered.append(node)
            available.update(node.output)
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


class CropReader:
    """ONNX Runtime ``CalibrationDataReader`` over aligned crops, in equal batches (a
    remainder smaller than one batch is left out).

    Args:
        crops: (N, S, S, 3) uint8 BGR aligned crops.
        info: the model's facts (preprocessing).
        input_name: the graph's input name.
        batch_size: crops per calibration batch.
    """

    def __init__(
        self, crops: np.ndarray, info: RecognizerInfo, input_name: str, batch_size: int = 16
    ) -> None:
        self.x = preprocess_crops(crops, info)
        self.input_name = input_name
        self.batch_size = int(batch_size)
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        # equal batches only: ONNX Runtime's histogram calibrators (entropy, percentile)
        # stack the batches, so a short last batch would break them
        size = min(self.batch_size, len(self.x))
        for i in range(0, len(self.x) - size + 1, size):
            yield {self.input_name: self.x[i : i + size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


@dataclass(frozen=True)
class Int8Options:
    """How to quantise.

    Attributes:
        quant_format: "qdq" (QuantizeLinear/DequantizeLinear pairs the runtime fuses) or
            "qoperator" (QLinearConv and friends).
        per_channel: one weight scale per output channel (more accurate, usually as fast).
        calibration: "minmax", "entropy" or "percentile" (ONNX Runtime's calibrators).
        activation_type: "uint8" (fast path on x86: u8 x s8) or "int8".
        weight_type: "int8" or "uint8".
        batch_size: calibration batch size.
        preprocess: run ONNX Runtime's ``quant_pre_process`` (shape inference, fusions) first.
    """

    quant_format: str = "qdq"
    per_channel: bool = True
    calibration: str = "minmax"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    batch_size: int = 16
    preprocess: bool = True

    def __post_init__(self) -> None:
        if self.quant_format not in QUANT_FORMATS:
            raise ValueError(
                f"quant_format must be one of {QUANT_FORMATS}, not {self.quant_format!r}"
            )
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration must be one of {CALIBRATION_METHODS}, not {self.calibration!r}"
            )
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("uint8", "int8"):
                raise ValueError(f"{name} must be 'uint8' or 'int8', not {getattr(self, name)!r}")

    @property
    def tag(self) -> str:
        """Short name for file names and reports, e.g. ``int8-qdq-pc``."""
        return f"int8-{self.quant_format}-{'pc' if self.per_channel else 'pt'}"


def quantize_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None,
    calib_crops: np.ndarray,
    *,
    info: RecognizerInfo | None = None,
    options: Int8Options | None = None,
) -> Path:
    """ONNX Runtime static INT8 quantisation calibrated on aligned crops.

    Args:
        src: fp32 ONNX file (dynamic batch).
        dst: output file (default ``<src>.<options.tag>.onnx``).
        calib_crops: (N, S, S, 3) uint8 BGR aligned crops of real faces (a few hundred is
            plenty; they are preprocessed by the model's metadata).
        info: model facts when ``src`` carries none.
        options: format, granularity and calibration method.

    Returns:
        The written path.

    Raises:
        ValueError: no calibration crops, or crops of the wrong size.
        ModelError: no model facts.
    """
    import onnx
    import onnxruntime.quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = options or Int8Options()
    info = model_info(src, info)
    calib_crops = np.asarray(calib_crops)
    if calib_crops.ndim != 4 or len(calib_crops) == 0:
        raise ValueError(
            f"INT8 calibration needs aligned crops (N, S, S, 3), got {calib_crops.shape}"
        )
    dst = Path(dst) if dst else variant_path(src, options.tag)
    types = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(src)
        if options.preprocess:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
            source = pre
        input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
        reader = CropReader(calib_crops, info, input_name, options.batch_size)
        out = Path(tmp) / "int8.onnx"
        q.quantize_static(
            str(source),
            str(out),
            reader,
            quant_format=q.QuantFormat.QDQ
            if options.quant_format == "qdq"
            else q.QuantFormat.QOperator,
            per_channel=options.per_channel,
            activation_type=types[options.activation_type],
            weight_type=types[options.weight_type],
            calibrate_method=methods[options.calibration],
        )
        model = onnx.load(str(out))
    extra = {
        **info.extra,
        "precision": "int8",
        "int8": {
            "format": options.quant_format,
            "per_channel": options.per_channel,
            "calibration": options.calibration,
            "activation_type": options.activation_type,
            "weight_type": options.weight_type,
            "calibration_crops": int(len(calib_crops)),
        },
    }
    save_with_info(model, replace(info, extra=extra), dst)
    log.info("INT8 (%s) copy of %s -> %s", options.tag, src, dst)
    return dst


def op_histogram(path: str | os.PathLike[str]) -> dict[str, int]:
    """Counts of node types in an ONNX file (to see what a quantiser produced)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, precision and op counts of a model file."""
    info = read_onnx_info(str(path))
    return {
        "path": str(path),
        "size_mb": Path(path).stat().st_size / 1e6,
        "precision": (info.extra.get("precision") if info else None) or "unknown",
        "ops": op_histogram(path),
    }
