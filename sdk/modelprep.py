"""One-off rewrites of ONNX files so they load and run fast: done once, cached by models.py.

- :func:`drop_dangling_inputs`: remove graph inputs no node reads and inputs that shadow
  initializers (OpenCV's SFace file declares 29 unused inputs; ONNX Runtime refuses it).
- :func:`fold_constant_nodes`: evaluate nodes whose inputs are all constant (block-quantised
  weights: DequantizeLinear -> Reshape) into fp32 initializers, so the runtime sees a plain
  fp32 graph it can fuse.
- :func:`make_batch_dynamic`: first axis of every graph input and output becomes ``batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_FOLDABLE = {"DequantizeLinear", "Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze", "Identity"}


def drop_dangling_inputs(model: Any) -> int:
    """Remove graph inputs that no node consumes or that are initializers. Returns the count."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    inits = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name in used and i.name not in inits]
    removed = len(graph.input) - len(keep)
    del graph.input[:]
    graph.input.extend(keep)
    return removed


def fold_constant_nodes(model: Any) -> int:
    """Replace nodes of :data:`_FOLDABLE` types whose inputs are all initializers by their value."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    folded: list[Any] = []
    kept = []
    for node in graph.node:
        inputs = [x for x in node.input if x]
        if node.op_type in _FOLDABLE and inputs and all(x in consts for x in inputs):
            ev = ReferenceEvaluator(node, opsets={"": _opset(model)})
            feeds = {x: consts[x] for x in inputs}
            outs = ev.run(None, feeds)
            for name, value in zip(node.output, outs, strict=True):
                consts[name] = np.asarray(value)
                folded.append(name)
        else:
            kept.append(node)
    if not folded:
        return 0
    used = {x for n in kept for x in n.input} | {o.name for o in graph.output}
    new_inits = [
        numpy_helper.from_array(consts[name], name)
        for name in dict.fromkeys([i.name for i in graph.initializer] + folded)
        if name in used
    ]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    return len(folded)


def make_batch_dynamic(model: Any, name: str = "batch") -> None:
    """Give every graph input and output a symbolic first dimension."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = name
    # Intermediate shapes recorded for a fixed batch would now be wrong.
    del model.graph.value_info[:]


def fix_flatten_reshapes(model: Any) -> int:
    """Rewrite constant Reshape targets that hard-code a batch of 1 to use 0 (copy) instead."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    changed = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim == 1 and shape.size >= 2 and shape[0] == 1 and -1 not in shape[1:]:
            new = shape.copy()
            new[0] = -1
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(new, node.input[1]))
            changed += 1
    return changed


def _opset(model: Any) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 17


def _rewrite(
    src: str,
    dst: str,
    steps: dict[str, Callable[[Any], int]],
    finish: Callable[[Any], None],
) -> dict[str, int]:
    """Load ``src``, apply the counted ``steps`` in order, then ``finish``; check and save."""
    import onnx

    model = onnx.load(src)
    report = {name: step(model) for name, step in steps.items()}
    finish(model)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    log.info("prepared %s -> %s: %s", src, dst, report)
    return report


RECOGNIZER_STEPS: dict[str, Callable[[Any], int]] = {
    "dropped_inputs": drop_dangling_inputs,
    "folded_nodes": fold_constant_nodes,
    "reshapes_fixed": fix_flatten_reshapes,
}
"""The counted clean-up steps of every prepared recogniser (fp32 and INT8)."""


def prepare_recognizer(src: str, dst: str) -> dict[str, int]:
    """Clean, dequantise and batch-enable a recogniser ONNX file; write it to ``dst``."""
    return _rewrite(src, dst, RECOGNIZER_STEPS, make_batch_dynamic)


INT8_RECIPE = "sface_int8"
"""The INT8 recipe (``npcface/recipes/<name>.json``) that ``recognizer-int8`` applies."""


def prepare_recognizer_int8(src: str, dst: str) -> dict[str, int]:
    """:func:`prepare_recognizer`, then the INT8 recipe's QDQ pairs (see :mod:`npcface.int8`)."""
    from .int8 import apply_recipe, load_recipe

    recipe = load_recipe(INT8_RECIPE)

    def quantize(model: Any) -> None:
        make_batch_dynamic(model)
        apply_recipe(model, recipe)

    return _rewrite(src, dst, RECOGNIZER_STEPS, quantize)


def make_spatial_dynamic(model: Any) -> None:
    """Give the height and width of every 4-D graph input symbolic sizes."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for i, name in ((2, "height"), (3, "width")):
                dims[i].ClearField("dim_value")
                dims[i].dim_param = name
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 3:
            dims[1].ClearField("dim_value")
            dims[1].dim_param = "anchors"
    del model.graph.value_info[:]


def prepare_detector(src: str, dst: str) -> dict[str, int]:
    """Dequantise a detector and let it take any input size (multiples of its stride)."""
    steps = {"dropped_inputs": drop_dangling_inputs, "folded_nodes": fold_constant_nodes}
    return _rewrite(src, dst, steps, make_spatial_dynamic)
