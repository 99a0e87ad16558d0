"""The model card: what an exporter needs to know of a trained backbone, written by the
trainer next to the weights, read by :mod:`npcface.export.checkpoint`, which guesses
nothing.

A card holds the :class:`~npcface.modelinfo.RecognizerInfo` of the model (input size,
channel order, normalisation, embedding size) and the backbone's registry name and
arguments. It is written as ``model_card.json`` in the run folder when training starts, and
inside every checkpoint (``model.pt`` and each rank file) under ``"model_card"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npcface.fsutil import atomic_write_text
from npcface.modelinfo import RecognizerInfo

MODEL_CARD = "model_card.json"
CARD_FORMAT = 1


def model_card(cfg: Any) -> dict[str, Any]:
    """The card of a :class:`~npcface.training.config.TrainConfig`'s model (JSON-ready)."""
    bb, data = cfg.backbone, cfg.data
    info = RecognizerInfo(
        name=f"npcface-{bb.name}",
        input_size=int(bb.input_size),
        channel_order="RGB",  # the trainer feeds RGB (see training/data/base.py)
        mean=(float(data.mean),) * 3,
        std=(float(data.std),) * 3,
        embedding_size=int(bb.embedding_size),
    )
    return {
        "format": CARD_FORMAT,
        "info": json.loads(info.to_json()),
        "backbone": bb.name,
        "backbone_kwargs": dict(bb.kwargs),
    }


def write_model_card(folder: str | Path, cfg: Any) -> Path:
    """Write ``model_card.json`` into ``folder`` (atomically); its path."""
    path = Path(folder) / MODEL_CARD
    atomic_write_text(path, json.dumps(model_card(cfg), indent=1, sort_keys=True))
    return path


def read_model_card(card: dict[str, Any]) -> tuple[RecognizerInfo, str, dict[str, Any]]:
    """(info, backbone name, backbone arguments) of a card.

    Raises:
        ValueError: not a card of a known format, or a field missing (named).
    """
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"not a model card of format {CARD_FORMAT}: {str(card)[:80]}")
    for key in ("info", "backbone"):
        if key not in card:
            raise ValueError(f"the model card has no {key!r}")
    info = RecognizerInfo.from_json(json.dumps(card["info"]))
    return info, str(card["backbone"]), dict(card.get("backbone_kwargs") or {})
