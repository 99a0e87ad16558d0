"""Rebuild a backbone from an ``npcface train`` checkpoint, with the facts the export records.

Checkpoints are loaded with ``torch.load(..., weights_only=True)`` (no pickled code runs).
The layout read here is ``training/train.py``'s (see :func:`load_checkpoint`); command-line
overrides cover checkpoints that lack a field.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npcface.errors import ModelError
from npcface.modelinfo import RecognizerInfo

from .onnx import file_sha256, import_torch

log = logging.getLogger(__name__)

_STATE_KEYS = ("state_dict", "backbone", "backbone_state_dict", "state_dict_backbone", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.")
"""Prefixes wrappers put before every key: DDP/DataParallel (``module.``), torch.compile
(``_orig_mod.``), and a backbone held as an attribute; stripped in any order and nesting."""
_SUMMARY_SKIP = ("data", "dir", "path", "file", "root", "output", "out", "resume", "log")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A backbone rebuilt from a checkpoint.

    Attributes:
        model: the backbone in eval mode, on the CPU.
        info: facts for the exported file's metadata (name, input size, normalisation,
            embedding size, thresholds when the checkpoint has them; ``extra`` holds the
            checkpoint's SHA-256 and a training config summary).
        reference_info: the preprocessing the backbone was trained with (for parity).
        config: the checkpoint's training config as stored.
    """

    model: Any
    info: RecognizerInfo
    reference_info: RecognizerInfo
    config: dict[str, Any] = field(default_factory=dict)


def _state_dict(ckpt: Any) -> dict[str, Any]:
    import torch

    if isinstance(ckpt, Mapping):
        for key in _STATE_KEYS:
            value = ckpt.get(key)
            if (
                isinstance(value, Mapping)
                and value
                and all(isinstance(v, torch.Tensor) for v in value.values())
            ):
                return dict(value)
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
    raise ModelError(
        "checkpoint holds no backbone weights (looked for a state dict under "
        f"{', '.join(_STATE_KEYS)} or at the top level)"
    )


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Strip wrapper prefixes shared by every key, repeatedly (``_orig_mod.module.`` is
    torch.compile around DDP, ``module._orig_mod.`` the other way round)."""
    stripped = True
    while state and stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


# arcface_torch (insightface recognition/arcface_torch/backbones/iresnet.py) module names
# -> ours (training/backbones/iresnet.py). Same layers, same order, other names.
_ARCFACE_BLOCK = {"bn1": "0", "conv1": "1", "bn2": "2", "prelu": "3", "conv2": "4", "bn3": "5"}
_ARCFACE_TOP = {"conv1": "stem.0", "bn1": "stem.1", "prelu": "stem.2", "bn2": "bn"}


def is_arcface_iresnet(state: Mapping[str, Any]) -> bool:
    """Does a state dict use arcface_torch's IResNet names (``layer1.0.bn1``, ``conv1``)?"""
    return "conv1.weight" in state and any(k.startswith("layer1.0.bn1.") for k in state)


def map_arcface_iresnet(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """arcface_torch IResNet keys -> this package's IResNet keys, and the facts they imply.

    Returns:
        ``(state, facts)``: the renamed state dict, and ``backbone`` (``iresnet{depth}``
        from the blocks per stage), ``embedding_size``, ``input_size`` (112 for arcface_torch's
        7 x 7 final map) and ``width`` when the stem is not 64 channels wide.

    Raises:
        ModelError: the blocks per stage match no known IResNet depth.
    """
    import re

    from npcface.training.backbones.iresnet import _LAYERS

    out: dict[str, Any] = {}
    blocks: dict[int, set[int]] = {}
    for key, value in state.items():
        m = re.match(r"layer(\d)\.(\d+)\.(\w+?)\.(.+)$", key)
        if m:
            stage, block, name, rest = int(m[1]), int(m[2]), m[3], m[4]
            blocks.setdefault(stage, set()).add(block)
            if name == "downsample":
                new = f"stages.{stage - 1}.{block}.downsample.{rest}"
            elif name in _ARCFACE_BLOCK:
                new = f"stages.{stage - 1}.{block}.body.{_ARCFACE_BLOCK[name]}.{rest}"
            else:
                new = key
        else:
            head, _, rest = key.partition(".")
            new = f"{_ARCFACE_TOP[head]}.{rest}" if head in _ARCFACE_TOP else key
        out[new] = value
    layers = tuple(len(blocks.get(i, ())) for i in (1, 2, 3, 4))
    depth = next((d for d, lay in _LAYERS.items() if lay == layers), None)
    if depth is None:
        raise ModelError(
            f"arcface_torch IResNet with {layers} blocks per stage matches no known depth "
            f"({', '.join(f'{d}: {lay}' for d, lay in _LAYERS.items())})"
        )
    facts: dict[str, Any] = {"backbone": f"iresnet{depth}"}
    fc = state.get("fc.weight")
    stem = state.get("conv1.weight")
    if fc is not None and stem is not None:
        facts["embedding_size"] = int(fc.shape[0])
        last = int(state[f"layer4.{max(blocks[4])}.bn3.weight"].shape[0])
        side = round((int(fc.shape[1]) / last) ** 0.5)
        facts["input_size"] = {7: 112, 8: 120}.get(side, side * 16)
        if int(stem.shape[0]) != 64:
            facts["width"] = int(stem.shape[0]) / 64
    return out, facts


def _shapes(t: Any) -> str:
    return "x".join(str(d) for d in getattr(t, "shape", ())) or "scalar"


def describe_mismatch(model: Any, state: Mapping[str, Any], limit: int = 3) -> str:
    """One line on how ``state`` differs from ``model.state_dict()``: counts of missing,
    unexpected and wrongly shaped keys with a few examples each (never the whole list)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shaped = [
        f"{k} {_shapes(state[k])} vs {_shapes(want[k])}"
        for k in want
        if k in state and getattr(state[k], "shape", None) != want[k].shape
    ]

    def part(name: str, items: list[str]) -> str:
        more = f", ... {len(items) - limit} more" if len(items) > limit else ""
        return f"{len(items)} {name} ({', '.join(items[:limit])}{more})"

    parts = [
        part(n, i)
        for n, i in (("missing", missing), ("unexpected", extra), ("of another shape", shaped))
        if i
    ]
    return f"{'; '.join(parts)} of {len(want)} keys" if parts else "keys match"


def _numpy_safe_globals() -> list[Any]:
    """numpy types a checkpoint may hold beside its tensors (``best_acc = np.float64(...)``,
    small arrays): scalars, dtypes and plain arrays of numeric dtypes. None of them runs code
    when unpickled."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    kinds = [
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
        np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128,
    ]  # fmt: skip
    dtype_classes = [type(np.dtype(k)) for k in kinds]
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def _load(torch: Any, path: Path) -> Any:
    """``torch.load(weights_only=True)`` with numpy scalars and arrays allowed; a refusal
    becomes one line naming the type that is not allowed."""
    import pickle
    import re

    try:
        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        with allow(_numpy_safe_globals()) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found[1] if found else "an object"
        raise ModelError(
            f"cannot read checkpoint {path}: it stores {what}, which torch.load("
            "weights_only=True) does not load (it could run code). Save the weights alone, "
            "e.g. torch.save(ckpt['state_dict'], 'weights.pt'), and export that"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... on broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot read checkpoint {path}: {first}") from exc


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Keys of floating-point tensors holding NaN or inf."""
    import torch

    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_summary(config: Mapping[str, Any], limit: int = 40) -> dict[str, Any]:
    """Scalar training settings worth carrying in a model file (no paths, at most ``limit``)."""
    flat = _flatten(config)
    out: dict[str, Any] = {}
    for k, v in sorted(flat.items()):
        leaf = k.rsplit(".", 1)[-1].lower()
        if any(leaf == s or leaf.endswith("_" + s) for s in _SUMMARY_SKIP):
            continue
        if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 80):
            out[k] = v
        elif (
            isinstance(v, (list, tuple))
            and len(v) <= 8
            and all(isinstance(x, (int, float, str)) for x in v)
        ):
            out[k] = list(v)
        if len(out) >= limit:
            break
    return out


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file from a path ``npcface train`` wrote.

    Accepts ``model.pt`` (from ``Trainer.export_model``), a rank file
    (``checkpoints/step_XXXXXXXX/rank0.pt``), a step folder (its ``rank0.pt``), a
    ``checkpoints`` folder or a run folder (its ``model.pt``, else the latest step).
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.pt").is_file():
            return path / "model.pt"
        for root in (path, path / "checkpoints"):
            latest = root / "latest"
            if latest.is_file():
                step = root / latest.read_text(encoding="utf-8").strip() / "rank0.pt"
                if step.is_file():
                    return step
        if (path / "rank0.pt").is_file():
            return path / "rank0.pt"
    raise ModelError(
        f"no checkpoint at {path}: give model.pt, a rank file, a step folder or a run folder"
    )


def _layout(ckpt: Any, path: Path) -> dict[str, Any]:
    """The facts of a checkpoint, as it states them; nothing is guessed.

    In order: its model card (inside it, or ``model_card.json`` in its run folder:
    :mod:`npcface.training.modelcard`); the flat facts of a ``model.pt`` written before
    model cards; the training config of a rank checkpoint written before them (its
    ``backbone`` and ``data`` sections; the trainer always fed RGB). A foreign checkpoint
    states nothing: its facts come from ``--backbone`` and ``--info``."""
    if not isinstance(ckpt, Mapping):
        raise ModelError(f"a checkpoint is a dict, this one is a {type(ckpt).__name__}")
    config = dict(ckpt.get("config") or {}) or {  # model.pt: its flat facts are the config
        k: v
        for k, v in ckpt.items()
        if k not in ("state_dict", "backbone_kwargs", "model_card", "backbone")
        or (k == "backbone" and isinstance(v, str))
    }
    card = ckpt.get("model_card") or _card_beside(path)
    if card is not None:
        from npcface.training.modelcard import read_model_card

        try:
            info, backbone, kwargs = read_model_card(card)
        except ValueError as exc:
            raise ModelError(f"{path}: {exc}") from None
        return {
            "backbone": backbone,
            "backbone_kwargs": kwargs,
            "input_size": info.input_size,
            "embedding_size": info.embedding_size,
            "channel_order": info.channel_order,
            "mean": info.mean,
            "std": info.std,
            "config": config,
        }
    if isinstance(ckpt.get("backbone"), str):  # model.pt of Trainer.export_model
        return {
            "backbone": ckpt["backbone"],
            "backbone_kwargs": dict(ckpt.get("backbone_kwargs") or {}),
            "input_size": ckpt.get("input_size"),
            "embedding_size": ckpt.get("embedding_size"),
            "channel_order": ckpt.get("channel_order"),
            "mean": ckpt.get("mean"),
            "std": ckpt.get("std"),
            "config": config,
        }
    bb = config.get("backbone") if isinstance(config.get("backbone"), Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    ours = bool(bb) and ckpt.get("format") is not None  # a rank file of npcface's trainer
    return {
        "backbone": bb.get("name"),
        "backbone_kwargs": dict(bb.get("kwargs") or {}),
        "input_size": bb.get("input_size"),
        "embedding_size": bb.get("embedding_size"),
        "channel_order": data.get("channel_order") or ("RGB" if ours else None),
        "mean": data.get("mean"),
        "std": data.get("std"),
        "config": config,
    }


def _card_beside(path: Path) -> dict[str, Any] | None:
    """The ``model_card.json`` of the run a checkpoint file belongs to (beside ``model.pt``,
    or two folders up from ``checkpoints/step_*/rank0.pt``)."""
    from npcface.training.modelcard import MODEL_CARD

    for folder in (path.parent, *list(path.parents)[1:3]):
        card = folder / MODEL_CARD
        if card.is_file():
            try:
                return json.loads(card.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelError(f"{card}: not valid JSON: {exc}") from None
    return None


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    vals = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(vals) != 3:
        raise ModelError(f"mean/std must be one number or three, not {value!r}")
    return (vals[0], vals[1], vals[2])


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    backbone: str | None = None,
    input_size: int | None = None,
    embedding_size: int | None = None,
    name: str | None = None,
    info: RecognizerInfo | None = None,
) -> LoadedCheckpoint:
    """Rebuild the backbone of an ``npcface train`` checkpoint.

    Two layouts are read (see ``training/train.py``): ``model.pt`` from
    ``Trainer.export_model`` (``backbone`` name, ``backbone_kwargs``, ``input_size``,
    ``embedding_size``, ``channel_order``, ``mean``, ``std``, ``state_dict``) and the rank
    checkpoints ``checkpoints/step_*/rank0.pt`` (weights under ``backbone``, the training
    config under ``config``); any of them with a model card, which the trainer also writes
    as ``model_card.json`` in the run folder. A plain state dict works with ``backbone=``
    and ``info`` given. Keyword arguments override the checkpoint; nothing is guessed: a
    fact that neither the checkpoint nor the arguments give is an error naming it.

    Checkpoints from elsewhere: numpy scalars and arrays stored beside the weights are
    allowed (:func:`_numpy_safe_globals`); wrapper prefixes (``module.``, ``_orig_mod.``,
    nested) are stripped; arcface_torch IResNet names are mapped to this package's IResNet
    (:func:`map_arcface_iresnet`, which also gives the depth, sizes and normalisation).

    Raises:
        MissingExtraError: torch is not installed.
        ModelError: the file is not a readable checkpoint (one line naming a type that is
            not safe to load), names no backbone, holds NaN/inf weights, or its weights do
            not fit the backbone (one line: counts and examples of the mismatched keys).
    """
    torch = import_torch()
    from npcface.training.backbones import get_backbone

    path = resolve_checkpoint_path(path)
    ckpt = _load(torch, path)
    facts = _layout(ckpt, path)
    config = facts["config"]
    state = _strip_prefixes(_state_dict(ckpt))
    if is_arcface_iresnet(state):
        state, implied = map_arcface_iresnet(state)
        width = implied.pop("width", None)
        if width is not None:
            facts["backbone_kwargs"] = {"width": width, **facts["backbone_kwargs"]}
        # what the checkpoint says wins; arcface_torch trains on RGB (x / 255 - 0.5) / 0.5
        implied.update(mean=127.5, std=127.5, channel_order="RGB")
        for key, value in implied.items():
            if facts.get(key) is None:
                facts[key] = value
        log.info("%s: arcface_torch IResNet names mapped (%s)", path.name, implied)
    bad = nonfinite_tensors(state)
    if bad:
        raise ModelError(
            f"{path}: {len(bad)} of {len(state)} tensors hold NaN/inf values (e.g. "
            f"{', '.join(bad[:3])}): the training run diverged; export an earlier checkpoint"
        )
    if info is not None:  # explicit facts (--info) of a checkpoint that states none
        for key in ("input_size", "embedding_size", "channel_order", "mean", "std"):
            if facts.get(key) is None:
                facts[key] = getattr(info, key)
    arch = backbone or facts["backbone"]
    if not isinstance(arch, str):
        raise ModelError(f"{path} does not name its backbone; pass --backbone NAME")
    size = input_size or facts["input_size"]
    dim = embedding_size or facts["embedding_size"]
    for value, what, option in (
        (size, "input size", "--input-size"),
        (dim, "embedding size", "--embedding-size"),
    ):
        if value is None:
            raise ModelError(f"{path} does not state its {what}; pass {option} (or --info)")
    size, dim = int(size), int(dim)
    missing = [k for k in ("channel_order", "mean", "std") if facts.get(k) is None]
    if missing:
        raise ModelError(
            f"{path} does not state its {', '.join(missing)}; pass --info with them, e.g. "
            """'{"name": "x", "input_size": 112, "channel_order": "RGB", "mean": 127.5, """
            """"std": 127.5, "embedding_size": 512}'"""
        )
    try:
        model = get_backbone(arch, input_size=size, embedding_size=dim, **facts["backbone_kwargs"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: cannot build backbone {arch!r}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelError(
            f"{path}: weights do not fit backbone {arch!r} at input size {size}, "
            f"{dim}-d: {describe_mismatch(model, state)}"
        ) from None
    model.eval()

    norm: dict[str, Any] = {}
    for key in ("mean", "std"):
        value = _triple(facts[key])
        if value is not None:
            norm[key] = value
    if facts["channel_order"]:
        norm["channel_order"] = str(facts["channel_order"]).upper()
    reference = RecognizerInfo(name=arch, input_size=size, embedding_size=dim, **norm)
    thresholds = config.get("thresholds")
    extra: dict[str, Any] = {
        "source_checkpoint": path.name,
        "source_checkpoint_sha256": file_sha256(path),
        "backbone": arch,
        "training": config_summary(config),
    }
    for key in ("epoch", "step"):
        if isinstance(ckpt.get(key), (int, float)):
            extra[key] = ckpt[key]
    info = RecognizerInfo(
        name=name or f"npcface-{arch}",
        input_size=size,
        channel_order=reference.channel_order,
        mean=reference.mean,
        std=reference.std,
        embedding_size=dim,
        thresholds={str(k): float(v) for k, v in (thresholds or {}).items()},
        threshold_source=str(config.get("threshold_source") or ""),
        extra=extra,
    )
    log.info("loaded %s: %s %dx%d -> %d-d", path.name, arch, size, size, dim)
    return LoadedCheckpoint(model=model, info=info, reference_info=reference, config=config)
