"""The JSON forms of npcface's results and errors, shared by the service and the client.

Needs only numpy and npcface itself (no FastAPI), so :mod:`npcface.client` can use it.

Errors travel as ``{"error": code, "message": ..., "input": ...}`` with the HTTP status of
:data:`ERRORS`; the client turns ``code`` back into the library's own exception class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import errors as E
from ..results import Face, Match, VerifyResult


@dataclass(frozen=True)
class ErrorKind:
    """One error code of the API: its HTTP status and the library exception it stands for."""

    code: str
    status: int
    exception: type[E.NpcfaceError]


ERRORS: dict[str, ErrorKind] = {
    k.code: k
    for k in (
        ErrorKind("image_error", 422, E.ImageError),
        ErrorKind("no_face", 422, E.NoFaceError),
        ErrorKind("multiple_faces", 422, E.MultipleFacesError),
        ErrorKind("low_quality", 422, E.LowQualityError),
        ErrorKind("embedding_error", 400, E.EmbeddingError),
        ErrorKind("unknown_model", 400, E.UnknownModelError),
        ErrorKind("unknown_name", 400, E.UnknownNameError),
        ErrorKind("invalid_argument", 400, E.InvalidArgumentError),
        ErrorKind("too_many_images", 400, E.InvalidArgumentError),
        ErrorKind("payload_too_large", 413, E.InvalidArgumentError),
        ErrorKind("gallery_error", 400, E.GalleryError),
        ErrorKind("gallery_argument", 400, E.GalleryArgumentError),
        ErrorKind("gallery_embedding", 400, E.GalleryEmbeddingError),
        ErrorKind("gallery_corrupt", 409, E.GalleryCorruptError),
        ErrorKind("gallery_busy", 409, E.GalleryBusyError),
        ErrorKind("gallery_exists", 409, E.GalleryExistsError),
        ErrorKind("gallery_closed", 409, E.GalleryClosedError),
        ErrorKind("gallery_not_found", 404, E.GalleryNotFoundError),
        ErrorKind("identity_not_found", 404, E.IdentityNotFoundError),
        ErrorKind("idempotency_key_reused", 422, E.RequestKeyReusedError),
        ErrorKind("model_error", 400, E.ModelError),
        ErrorKind("provider_error", 400, E.ProviderError),
        ErrorKind("missing_extra", 400, E.MissingExtraError),
        ErrorKind("npcface_error", 400, E.NpcfaceError),
        ErrorKind("unauthorized", 401, E.NpcfaceError),
        ErrorKind("forbidden", 403, E.NpcfaceError),
        ErrorKind("not_found", 404, E.NpcfaceError),
        ErrorKind("method_not_allowed", 405, E.NpcfaceError),
        ErrorKind("timeout", 503, E.NpcfaceError),
        ErrorKind("not_ready", 503, E.NpcfaceError),
        ErrorKind("internal", 500, E.NpcfaceError),
    )
}

# Library classes, most specific first: the code of an exception is that of its first match.
_BY_CLASS: tuple[tuple[type[E.NpcfaceError], str], ...] = (
    (E.GalleryCorruptError, "gallery_corrupt"),
    (E.GalleryNotFoundError, "gallery_not_found"),
    (E.GalleryExistsError, "gallery_exists"),
    (E.GalleryBusyError, "gallery_busy"),
    (E.GalleryClosedError, "gallery_closed"),
    (E.IdentityNotFoundError, "identity_not_found"),
    (E.RequestKeyReusedError, "idempotency_key_reused"),
    (E.GalleryEmbeddingError, "gallery_embedding"),
    (E.GalleryArgumentError, "gallery_argument"),
    (E.GalleryError, "gallery_error"),
    (E.EmbeddingError, "embedding_error"),
    (E.UnknownModelError, "unknown_model"),
    (E.UnknownNameError, "unknown_name"),
    (E.InvalidArgumentError, "invalid_argument"),
    (E.ImageError, "image_error"),
    (E.NoFaceError, "no_face"),
    (E.MultipleFacesError, "multiple_faces"),
    (E.LowQualityError, "low_quality"),
    (E.MissingExtraError, "missing_extra"),
    (E.ModelError, "model_error"),
    (E.ProviderError, "provider_error"),
    (E.NpcfaceError, "npcface_error"),
)


class ServiceError(E.NpcfaceError):
    """An error the service itself raises (limits, auth, lookups), with its API code.

    Args:
        code: a key of :data:`ERRORS`.
        message: what went wrong, naming the input and the fix.
        input: the offending input (``images[1]``, a file name, a gallery), if any.
    """

    def __init__(self, code: str, message: str, input: str | None = None) -> None:
        super().__init__(message)
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.input = input


def error_code(exc: BaseException) -> str:
    """The API code of an exception (``internal`` for anything that is not an NpcfaceError)."""
    if isinstance(exc, ServiceError):
        return exc.code
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return "internal"


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for an exception. Non-npcface errors say nothing of themselves."""
    code = error_code(exc)
    message = str(exc) if code != "internal" else "internal server error"
    return ERRORS[code].status, {
        "error": code,
        "message": message,
        "input": getattr(exc, "input", None),
    }


def exception_from(body: Mapping[str, Any], status: int) -> E.NpcfaceError:
    """The library exception a JSON error body stands for (what the library would raise),
    or a :class:`ServiceError` for the service's own conditions (auth, timeout, ...); with
    ``code``, ``status`` and ``input`` attributes."""
    code = str(body.get("error", ""))
    message = str(body.get("message", f"HTTP {status}"))
    kind = ERRORS.get(code)
    cls = kind.exception if kind is not None else E.NpcfaceError
    if cls is E.NpcfaceError and code in ERRORS and code != "npcface_error":
        return _with_status(ServiceError(code, message, body.get("input")), status)
    if cls in (E.MissingExtraError, E.LowQualityError):  # constructors take parts: keep the message
        exc: E.NpcfaceError = cls.__new__(cls)
        Exception.__init__(exc, message)
    else:
        exc = cls(message)
    exc.code = code  # type: ignore[attr-defined]
    exc.input = body.get("input")  # type: ignore[attr-defined]
    return _with_status(exc, status)


def _with_status(exc: E.NpcfaceError, status: int) -> E.NpcfaceError:
    exc.status = status  # type: ignore[attr-defined]
    return exc


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
        from ..quality import FaceQuality

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
