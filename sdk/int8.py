"""INT8 recognisers built on this machine from the shipped fp32 weights and a stored recipe.

A recipe holds what post-training quantisation learned from calibration images, and
nothing else: the scale and zero point of every quantised activation, and the per-channel
scale of every quantised weight. The weights themselves come from the shipped model file,
so the recipe is small (kilobytes), ships in the package (``npcface/recipes/*.json``), and
needs no data and no quantisation tool at run time: :func:`apply_recipe` inserts
``QuantizeLinear`` / ``DequantizeLinear`` pairs (QDQ) into the fp32 graph, which OpenVINO
and ONNX Runtime run as INT8 kernels. :mod:`npcface.models` builds the file once and caches
it with its SHA-256 recorded, like every prepared model.

Recipes are made offline by ``bench/make_int8_recipe.py`` (NNCF post-training
quantisation, calibrated on aligned crops of the celeba-subset photos, never on LFW), which
reads the quantised graph NNCF writes with :func:`extract_recipe`. A layer the recipe does not
name stays fp32: SFace's recipe leaves its first convolution unquantised, whose INT8 input
and weights made the error grow with the head's turn (``docs/accuracy.md``).
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import Any

import numpy as np

from .errors import ModelError

RECIPE_VERSION = 1


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe shipped as ``npcface/recipes/<name>.json``.

    Raises:
        ModelError: no such recipe, or it is of another version.
    """
    try:
        text = resources.files("npcface").joinpath("recipes", f"{name}.json").read_text()
    except (FileNotFoundError, OSError) as exc:
        raise ModelError(f"no INT8 recipe {name!r} in npcface/recipes: {exc}") from exc
    recipe = json.loads(text)
    if recipe.get("version") != RECIPE_VERSION:
        raise ModelError(
            f"INT8 recipe {name!r} is version {recipe.get('version')}, expected {RECIPE_VERSION}"
        )
    return recipe


def _pack(values: Any, dtype: str) -> str:
    """Little-endian bytes of ``values`` as ``dtype``, base64 (exact and compact)."""
    return base64.b64encode(
        np.atleast_1d(values).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    ).decode()


def _unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _arrays(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _attr(node: Any, name: str, default: int) -> int:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def extract_recipe(quantized: Any, fp32: Any) -> dict[str, Any]:
    """The recipe of a QDQ-quantised graph (as NNCF writes it) over its fp32 original.

    Args:
        quantized: the quantised ``onnx.ModelProto``: every weight ``W`` of the fp32 graph
            that was quantised is fed to its node through ``DequantizeLinear(q, scale, zp)``;
            every quantised activation ``a`` passes through ``QuantizeLinear`` ->
            ``DequantizeLinear``.
        fp32: the fp32 ``onnx.ModelProto`` it was made from.

    Returns:
        ``{"version", "activations": {tensor: {scale, zero_point, per_channel, axis,
        dtype}}, "weights": {initializer: {scale, axis}}}``; scales are float32 and zero
        points ``dtype``, as base64 of their little-endian bytes.

    Raises:
        ModelError: a quantised weight is not symmetric (zero point 0) or is not
            ``clip(round(W / scale), -128, 127)`` of the fp32 weight, so that
            :func:`apply_recipe` would not rebuild it exactly.
    """
    q_arrays, f_arrays = _arrays(quantized), _arrays(fp32)
    producer = {o: n for n in quantized.graph.node for o in n.output}
    activations: dict[str, Any] = {}
    weights: dict[str, Any] = {}
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear":
            scale, zp = q_arrays[node.input[1]], q_arrays[node.input[2]]
            activations[node.input[0]] = {
                "scale": _pack(scale, "float32"),
                "zero_point": _pack(zp, str(zp.dtype)),
                "per_channel": bool(scale.ndim),
                "axis": _attr(node, "axis", 1),
                "dtype": str(zp.dtype),
            }
            continue
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in q_arrays:
                continue
            w_name = _weight_of(node, name, fp32)
            q, scale = q_arrays[dq.input[0]], q_arrays[dq.input[1]]
            zp = q_arrays[dq.input[2]] if len(dq.input) > 2 else np.zeros(1, np.int8)
            axis = _attr(dq, "axis", 1)
            if np.any(zp != 0):
                raise ModelError(f"weight {w_name} is not quantised symmetrically")
            rebuilt = _quantize_weight(f_arrays[w_name], scale, axis)
            if rebuilt.shape != q.shape or not np.array_equal(rebuilt, q.astype(np.int8)):
                raise ModelError(f"weight {w_name} is not round(W / scale) of the fp32 weight")
            weights[w_name] = {
                "scale": _pack(scale, "float32"),
                "per_channel": bool(scale.ndim),
                "axis": axis,
            }
    return {"version": RECIPE_VERSION, "activations": activations, "weights": weights}


def _weight_of(node: Any, dq_output: str, fp32: Any) -> str:
    """The fp32 initializer that feeds ``node`` where the quantised graph feeds ``dq_output``."""
    index = list(node.input).index(dq_output)
    for original in fp32.graph.node:
        if original.name == node.name or list(original.output) == list(node.output):
            return original.input[index]
    raise ModelError(f"no node of the fp32 graph matches {node.name or node.output[0]}")


def _quantize_weight(w: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    if np.ndim(scale):
        shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    return np.clip(np.round(w / s), -128, 127).astype(np.int8)


def apply_recipe(model: Any, recipe: dict[str, Any]) -> int:
    """Insert the recipe's QDQ pairs into an fp32 ``onnx.ModelProto`` in place.

    Each quantised weight ``W`` (an initializer) becomes ``DequantizeLinear(round(W /
    scale) as int8, scale, 0)``; each quantised activation ``a`` is replaced, for every
    node that reads it, by ``DequantizeLinear(QuantizeLinear(a))``. A runtime that fuses
    QDQ runs the node in INT8.

    Returns:
        The number of QDQ insertions (weights + activations).

    Raises:
        ModelError: the recipe names a tensor or weight the graph does not have.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    arrays = _arrays(model)
    position = {o: i for i, n in enumerate(graph.node) for o in n.output}  # -1: graph input
    produced = set(position) | {i.name for i in graph.input}
    new_nodes: dict[int, list[Any]] = {}
    new_inits = []
    renames: dict[str, str] = {}
    for tensor, p in recipe["activations"].items():
        if tensor not in produced:
            raise ModelError(f"INT8 recipe quantises {tensor!r}, which the graph does not have")
        dtype = np.dtype(p["dtype"])
        scale = _unpack(p["scale"], "float32")
        zp = _unpack(p["zero_point"], str(dtype))
        if not p["per_channel"]:
            scale, zp = scale.reshape(()), zp.reshape(())
        names = [f"{tensor}_q8_scale", f"{tensor}_q8_zp", f"{tensor}_q8", f"{tensor}_dq8"]
        new_inits += [
            numpy_helper.from_array(scale, names[0]),
            numpy_helper.from_array(zp, names[1]),
        ]
        kw = {"axis": int(p["axis"])} if p["per_channel"] else {}
        new_nodes.setdefault(position.get(tensor, -1), []).extend(
            [
                helper.make_node("QuantizeLinear", [tensor, names[0], names[1]], [names[2]], **kw),
                helper.make_node(
                    "DequantizeLinear", [names[2], names[0], names[1]], [names[3]], **kw
                ),
            ]
        )
        renames[tensor] = names[3]
    for w_name, p in recipe["weights"].items():
        if w_name not in arrays:
            raise ModelError(f"INT8 recipe quantises weight {w_name!r}, which the graph lacks")
        w = arrays[w_name]
        scale = _unpack(p["scale"], "float32")
        if not p["per_channel"]:
            scale = scale.reshape(())
        q = _quantize_weight(w, scale, p["axis"])
        names = [f"{w_name}_q8w", f"{w_name}_q8w_scale", f"{w_name}_q8w_zp", f"{w_name}_dq8w"]
        new_inits += [
            numpy_helper.from_array(q, names[0]),
            numpy_helper.from_array(scale, names[1]),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), names[2]),
        ]
        kw = {"axis": int(p["axis"])} if scale.ndim else {}
        new_nodes.setdefault(-1, []).append(
            helper.make_node("DequantizeLinear", names[:3], [names[3]], **kw)
        )
        renames[w_name] = names[3]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    ordered = list(new_nodes.get(-1, []))
    for pos, node in enumerate(graph.node):
        ordered.append(node)
        ordered.extend(new_nodes.get(pos, []))
    del graph.node[:]
    graph.node.extend(ordered)
    used = {x for n in graph.node for x in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    return len(recipe["activations"]) + len(recipe["weights"])
