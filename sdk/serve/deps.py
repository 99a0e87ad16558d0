"""Dependencies: the key's rights, the recogniser, a gallery by name, typed body fields."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import InvalidArgumentError, UnauthorizedError
from ..wire import far_of_threshold
from .inputs import Payload, payload_reader


def _presented_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer KEY`` (scheme in any case) or ``X-API-Key``.

    Raises:
        UnauthorizedError: another ``Authorization`` scheme, saying what to send instead.
    """
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, key = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
        raise UnauthorizedError(
            f"Authorization scheme {scheme or '(none)'!r} is not accepted: send "
            "'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            input="Authorization",
        )
    return request.headers.get("x-api-key")


async def can_read(request: Request) -> str:
    """Any valid key (or none when keys are off). Raises ``unauthorized`` (401)."""
    keys = request.app.state.keys
    return keys.check(_presented_key(request) if keys.enabled else None, "read")


async def can_write(request: Request) -> str:
    """A write key. Raises ``unauthorized`` (401) or ``forbidden`` (403)."""
    keys = request.app.state.keys
    return keys.check(_presented_key(request) if keys.enabled else None, "write")


async def recognizer(request: Request) -> Any:
    return request.app.state.recognizer


async def gallery_name(request: Request, name: str) -> str:
    """The ``{name}`` of an existing gallery. Raises ``gallery_not_found`` (404)."""
    return request.app.state.galleries.require(name)


Recognizer = Annotated[Any, Depends(recognizer)]
"""The service's :class:`~npcface.FaceRecognizer`."""
GalleryName = Annotated[str, Depends(gallery_name)]
"""The ``{name}`` path parameter of an existing gallery."""
Images = Annotated[Payload, Depends(payload_reader(("images",)))]
"""A body with image field ``images`` (several)."""
Image = Annotated[Payload, Depends(payload_reader(("image",)))]
"""A body with image field ``image``."""
ImagePair = Annotated[Payload, Depends(payload_reader(("image1", "image2")))]
"""A body with image fields ``image1`` and ``image2``."""


# ---------------------------------------------------------------- typed fields of a Payload
def number(payload: Payload, name: str, default: float | None = None) -> float | None:
    """A finite number field (``None`` when absent). Raises InvalidArgumentError."""
    value = payload.get(name)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise bad(name, f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise bad(name, f"must be a finite number, got {value!r}")
    return out


def integer(payload: Payload, name: str, default: int, lo: int, hi: int) -> int:
    """An integer field in [lo, hi]. Raises InvalidArgumentError."""
    value = payload.get(name, default)
    try:
        out = int(value)
        ok = out == float(value) and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok or not lo <= out <= hi:
        raise bad(name, f"must be an integer in [{lo}, {hi}], got {value!r}")
    return out


def flag(payload: Payload, name: str, default: bool = False) -> bool:
    value = payload.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    if value in (0, 1):
        return bool(value)
    raise bad(name, f"must be true or false, got {value!r}")


def mapping(payload: Payload, name: str) -> dict[str, Any] | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise bad(name, "must be a JSON object")
    return value


def threshold_of(
    rec: Any, payload: Payload, default: bool = True
) -> tuple[float | None, float | None]:
    """(threshold, far) of a decision, the library's rule
    (:meth:`~npcface.FaceRecognizer.decision_threshold`): the ``threshold`` field, or the
    one calibrated for ``far``, or (``default``) the model's calibrated default; ``far`` is
    the FAR the threshold was calibrated at, when it was. Without ``default`` (a search of
    embeddings, whose gallery may not be cosine) a given threshold is passed on as it is,
    for the gallery's own check, and no threshold is (None, None).

    Raises:
        InvalidArgumentError: both fields, a threshold that is no cosine, or no threshold
            calibrated at that FAR.
    """
    threshold, far = number(payload, "threshold"), number(payload, "far")
    if not default and far is None:
        return threshold, None
    limit = rec.decision_threshold(threshold, far)
    if far is None and threshold is None:
        far = far_of_threshold(rec.info.thresholds, limit)
    return limit, far


def bad(name: str, text: str) -> InvalidArgumentError:
    """An InvalidArgumentError about field ``name`` (400 ``invalid_argument``)."""
    return InvalidArgumentError(f"{name}: {text}", input=name)
