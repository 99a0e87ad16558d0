"""Facts that travel with a recognition model: input size, normalisation, colour order, thresholds.

For models we export, these live in the ONNX file's ``metadata_props`` under the single key
:data:`METADATA_KEY` as JSON; for third-party models they live in the registry entry
(:mod:`npcface.models`). The embedder reads nothing else, so no consumer guesses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InvalidArgumentError, ModelError

METADATA_KEY = "npcface"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RecognizerInfo:
    """Preprocessing and decision facts of a face recognition model.

    Attributes:
        name: model name, reported in results.
        input_size: side S of the square aligned crop (112 for ArcFace/SFace, 120 for ours).
        channel_order: "RGB" or "BGR", the order the model expects.
        mean, std: per-channel normalisation applied as (x - mean) / std to 0..255 pixels,
            in the model's channel order. (0, 1) when the graph normalises internally.
        embedding_size: length of the output vector.
        thresholds: cosine thresholds by name, e.g. {"default": 0.36, "far=1e-3": 0.41}.
        threshold_source: how the thresholds were obtained (protocol, FAR, date).
        extra: free-form facts (source checkpoint hash, training config summary, ...).
    """

    name: str
    input_size: int
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    embedding_size: int = 512
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise InvalidArgumentError(
                f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}"
            )
        if self.input_size <= 0 or self.embedding_size <= 0:
            raise InvalidArgumentError("input_size and embedding_size must be positive")

    def to_json(self) -> str:
        d = asdict(self)
        d["schema"] = SCHEMA_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RecognizerInfo:
        d = json.loads(text)
        schema = d.pop("schema", SCHEMA_VERSION)
        if schema > SCHEMA_VERSION:
            raise ModelError(f"model metadata schema {schema} is newer than this npcface reads")
        d["mean"] = tuple(float(v) for v in d["mean"])
        d["std"] = tuple(float(v) for v in d["std"])
        d["thresholds"] = {str(k): float(v) for k, v in d.get("thresholds", {}).items()}
        return cls(**d)

    def threshold_for(self, key: str = "default") -> float | None:
        return self.thresholds.get(key)


def read_onnx_info(path: str) -> RecognizerInfo | None:
    """The :class:`RecognizerInfo` stored in an ONNX file, or ``None`` when it carries none."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return RecognizerInfo.from_json(prop.value)
    return None


def write_onnx_info(model: Any, info: RecognizerInfo) -> None:
    """Set (replace) the npcface metadata on an in-memory ``onnx.ModelProto``."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    prop = model.metadata_props.add()
    prop.key = METADATA_KEY
    prop.value = info.to_json()
