"""Rebuild a backbone from an ``npcface train`` checkpoint, with the facts the export records.

Checkpoints are loaded with ``torch.load(..., weights_only=True)`` (no pickled code runs).
The layout read here is ``training/train.py``'s (see :func:`load_checkpoint`); command-line
overrides cover checkpoints that lack a field.
"""

from __future__ import annotations

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

_STATE_KEYS = ("state_dict", "backbone", "backbone_state_dict", "model")
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
    for prefix in ("module.", "backbone.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


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


def _pick(config: Mapping[str, Any], *names: str) -> Any:
    flat = _flatten(config)
    for name in names:
        if name in config:
            return config[name]
        for k, v in flat.items():
            if k.rsplit(".", 1)[-1] == name:
                return v
    return None


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


def _layout(ckpt: Any) -> dict[str, Any]:
    """Normalise the two ``npcface train`` layouts (and plain ones) to one dict of facts."""
    if not isinstance(ckpt, Mapping):
        raise ModelError(f"a checkpoint is a dict, this one is a {type(ckpt).__name__}")
    config = dict(ckpt.get("config") or {})
    if isinstance(ckpt.get("backbone"), str):
        # model.pt from Trainer.export_model: flat facts + "state_dict"
        return {
            "backbone": ckpt["backbone"],
            "backbone_kwargs": dict(ckpt.get("backbone_kwargs") or {}),
            "input_size": ckpt.get("input_size"),
            "embedding_size": ckpt.get("embedding_size"),
            "channel_order": ckpt.get("channel_order"),
            "mean": ckpt.get("mean"),
            "std": ckpt.get("std"),
            "config": config
            or {k: v for k, v in ckpt.items() if k not in ("state_dict", "backbone_kwargs")},
        }
    # a rank checkpoint (Trainer.state_dict): weights under "backbone", the TrainConfig
    # under "config" (backbone.{name,input_size,embedding_size,kwargs}, data.{mean,std})
    bb = config.get("backbone") if isinstance(config.get("backbone"), Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    return {
        "backbone": bb.get("name") or _pick(config, "backbone", "network", "arch"),
        "backbone_kwargs": dict(bb.get("kwargs") or _pick(config, "backbone_kwargs") or {}),
        "input_size": bb.get("input_size") or _pick(config, "input_size"),
        "embedding_size": bb.get("embedding_size") or _pick(config, "embedding_size"),
        "channel_order": data.get("channel_order") or _pick(config, "channel_order"),
        "mean": data.get("mean", _pick(config, "mean")),
        "std": data.get("std", _pick(config, "std")),
        "config": config,
    }


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
) -> LoadedCheckpoint:
    """Rebuild the backbone of an ``npcface train`` checkpoint.

    Two layouts are read (see ``training/train.py``): ``model.pt`` from
    ``Trainer.export_model`` (``backbone`` name, ``backbone_kwargs``, ``input_size``,
    ``embedding_size``, ``channel_order``, ``mean``, ``std``, ``state_dict``) and the rank
    checkpoints ``checkpoints/step_*/rank0.pt`` (weights under ``backbone``, the training
    config under ``config``). A plain state dict works with ``backbone=`` given. Keyword
    arguments override the checkpoint.

    Raises:
        MissingExtraError: torch is not installed.
        ModelError: the file is not a readable checkpoint, names no backbone, or its
            weights do not fit the backbone.
    """
    torch = import_torch()
    from npcface.training.backbones import get_backbone

    path = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    facts = _layout(ckpt)
    config = facts["config"]
    arch = backbone or facts["backbone"]
    if not isinstance(arch, str):
        raise ModelError(f"{path} does not name its backbone; pass --backbone NAME")
    size = int(input_size or facts["input_size"] or 120)
    dim = int(embedding_size or facts["embedding_size"] or 512)
    try:
        model = get_backbone(arch, input_size=size, embedding_size=dim, **facts["backbone_kwargs"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: cannot build backbone {arch!r}: {exc}") from exc
    state = _strip_prefixes(_state_dict(ckpt))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit backbone {arch!r}: {exc}") from exc
    model.eval()

    norm: dict[str, Any] = {}
    for key in ("mean", "std"):
        value = _triple(facts[key])
        if value is not None:
            norm[key] = value
    if facts["channel_order"]:
        norm["channel_order"] = str(facts["channel_order"]).upper()
    reference = RecognizerInfo(name=arch, input_size=size, embedding_size=dim, **norm)
    thresholds = _pick(config, "thresholds")
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
        threshold_source=str(_pick(config, "threshold_source") or ""),
        extra=extra,
    )
    log.info("loaded %s: %s %dx%d -> %d-d", path.name, arch, size, size, dim)
    return LoadedCheckpoint(model=model, info=info, reference_info=reference, config=config)
