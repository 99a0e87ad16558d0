"""The JSON forms of npcface's results and errors, shared by the service and the client.

Needs only numpy and npcface itself (no FastAPI, no httpx).

Errors travel as ``{"error": code, "message": ..., "input": ...}`` with the HTTP status of
their class (:class:`~npcface.errors.NpcfaceError` ``code`` and ``status``); the client turns
``code`` back into that class. Both tables come from the classes: nothing to keep in step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import errors as E
from .results import Face, FaceQuality, Match, VerifyResult


def _classes(root: type[E.NpcfaceError]) -> list[type[E.NpcfaceError]]:
    out = [root]
    for sub in root.__subclasses__():
        out.extend(c for c in _classes(sub) if c not in out)
    return out


ERRORS: dict[str, type[E.NpcfaceError]] = {
    c.code: c for c in _classes(E.NpcfaceError) if "code" in vars(c)
}
"""API error code -> the exception class that declares it. A subclass that declares no code
of its own (an index file error, a training error) travels as its parent's."""


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for an exception. An exception that is not an NpcfaceError
    is ``internal`` (500) and says nothing of itself (the service logs it)."""
    if not isinstance(exc, E.NpcfaceError):
        exc = E.InternalError("internal server error")
    return exc.status, {"error": exc.code, "message": str(exc), "input": exc.input}


def exception_from(body: Mapping[str, Any], status: int) -> E.NpcfaceError:
    """The exception a JSON error body stands for: the library's own class for its code
    (what the library would have raised), else an :class:`~npcface.errors.NpcfaceError`
    (``status``, the HTTP status answered, is then only in the message), with ``input``."""
    if str(body.get("error", "")) not in ERRORS:
        body = {**body, "message": f"HTTP {status}: {body.get('message', '')}"}
    code = str(body.get("error", ""))
    message = str(body.get("message", f"HTTP {status}"))
    cls = ERRORS.get(code, E.NpcfaceError)
    return cls(message, input=body.get("input"))


# ---------------------------------------------------------------- results as JSON
def face_to_json(face: Face) -> dict[str, Any]:
    """A face as JSON: box (x1, y1, x2, y2) and landmarks (5 x 2) in pixels, score, quality."""
    out: dict[str, Any] = {
        "box": [float(v) for v in face.box],
        "landmarks": [[float(x), float(y)] for x, y in face.landmarks],
        "score": float(face.score),
    }
    quality = getattr(face, "quality", None)
    out["quality"] = quality.to_dict() if quality is not None else None
    return out


def face_from_json(d: Mapping[str, Any]) -> Face:
    kwargs: dict[str, Any] = {
        "box": np.asarray(d["box"], np.float32),
        "landmarks": np.asarray(d["landmarks"], np.float32).reshape(5, 2),
        "score": float(d["score"]),
    }
    if d.get("quality") is not None:
        kwargs["quality"] = FaceQuality(**{k: float(v) for k, v in d["quality"].items()})
    return Face(**kwargs)


def embedding_to_json(emb: np.ndarray) -> list[float]:
    """float32 values as JSON numbers; they come back bit-exact through float64."""
    return np.asarray(emb, np.float32).astype(np.float64).tolist()


def embedding_from_json(values: Any, what: str = "embedding") -> np.ndarray:
    """A (d,) float32 vector from a JSON list.

    Raises:
        EmbeddingError: not a non-empty list of finite numbers.
    """
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise E.EmbeddingError(f"{what}: not a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise E.EmbeddingError(f"{what}: expected a flat list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise E.EmbeddingError(f"{what}: contains NaN or infinite values")
    return arr


def match_to_json(m: Match) -> dict[str, Any]:
    return {
        "identity": m.identity,
        "similarity": float(m.similarity),
        "template_id": int(m.template_id),
        "metadata": m.metadata,
    }


def match_from_json(d: Mapping[str, Any]) -> Match:
    return Match(
        identity=str(d["identity"]),
        similarity=float(d["similarity"]),
        template_id=int(d["template_id"]),
        metadata=dict(d["metadata"]) if d.get("metadata") is not None else None,
    )


def verify_to_json(r: VerifyResult, far: float | None) -> dict[str, Any]:
    return {
        "verified": bool(r.verified),
        "similarity": float(r.similarity),
        "threshold": float(r.threshold),
        "far": far,
        "face1": face_to_json(r.face1) if r.face1 is not None else None,
        "face2": face_to_json(r.face2) if r.face2 is not None else None,
        "model": r.model,
    }


def verify_from_json(d: Mapping[str, Any]) -> VerifyResult:
    return VerifyResult(
        verified=bool(d["verified"]),
        similarity=float(d["similarity"]),
        threshold=float(d["threshold"]),
        face1=face_from_json(d["face1"]) if d.get("face1") else None,
        face2=face_from_json(d["face2"]) if d.get("face2") else None,
        model=str(d["model"]),
    )


def far_of_threshold(thresholds: Mapping[str, float], threshold: float) -> float | None:
    """The FAR a threshold was calibrated at (``far=...`` key with that value), if any."""
    for key, value in thresholds.items():
        if key.startswith("far=") and abs(float(value) - threshold) < 1e-9:
            return float(key[4:])
    return None


def matches_from_json(rows: Sequence[Sequence[Mapping[str, Any]]]) -> list[list[Match]]:
    return [[match_from_json(m) for m in row] for row in rows]
