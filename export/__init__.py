"""Export: trained models and third-party ONNX files -> artefacts the SDK runs directly.

>>> from npcface.export import export_onnx, check_parity  # doctest: +SKIP
>>> export_onnx(model, "model.onnx", input_size=120)  # doctest: +SKIP
>>> check_parity(model, "model.onnx", crops).min_cosine  # doctest: +SKIP

Nothing heavy is imported here: torch, onnx and TensorRT load inside the functions that use
them, so ``npcface --help`` works without the ``export`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_onnx": "onnx",
    "export_third_party": "onnx",
    "export_checked": "onnx",
    "ExportResult": "onnx",
    "OpsetError": "onnx",
    "check_parity": "parity",
    "ParityReport": "parity",
    "ParityError": "parity",
    "load_checkpoint": "checkpoint",
    "LoadedCheckpoint": "checkpoint",
    "convert_fp16": "quantize",
    "quantize_int8": "quantize",
    "build_engine": "tensorrt",
    "TensorRTBuildConfig": "tensorrt",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'npcface.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_EXPORTS)
