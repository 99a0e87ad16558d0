"""npcface.training: learn face embedding models with NPCFace and baseline margin heads.

Needs the ``train`` extra (torch, pyyaml, tensorboard). Importing this package does not
import torch; the names below load their module on first use::

    from npcface.training import get_backbone, get_head, PartialFC, Trainer, load_config

- :mod:`~npcface.training.heads`: margin heads (NPCFace, ArcFace, CosFace, SphereFace,
  MV-softmax, CurricularFace, AdaCos, normalised softmax) and :func:`npcface_logits`.
- :mod:`~npcface.training.backbones`: MobileFaceNet and IResNet-18/34/50/100.
- :mod:`~npcface.training.partial_fc`: sharded, sampled class centres.
- :mod:`~npcface.training.data`: folders, list files, RecordIO, synthetic data, prepare.
- :mod:`~npcface.training.train`: the trainer; :mod:`~npcface.training.config`: configs.
- ``npcface train run CONFIG`` / ``npcface train prepare RAW_DIR OUT_DIR`` (:mod:`.cli`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "get_head": "heads",
    "list_heads": "heads",
    "npcface_logits": "heads",
    "get_backbone": "backbones",
    "list_backbones": "backbones",
    "PartialFC": "partial_fc",
    "Trainer": "train",
    "TrainResult": "train",
    "load_model": "train",
    "TrainConfig": "config",
    "load_config": "config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
