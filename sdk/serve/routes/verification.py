"""``/v1/verify``: two images (or an image and an embedding) -> same person?"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...errors import EmbeddingError, InvalidArgumentError
from ...results import Face
from ...wire import embedding_from_json, verify_to_json
from .. import deps, schemas
from ..inputs import Payload
from ..pipeline import represent

router = APIRouter(prefix="/v1", tags=["verification"], dependencies=[Depends(deps.can_read)])

_SIDE = {"type": "string", "format": "byte", "description": "base64 image"}
_EMB = {"type": "array", "items": {"type": "number"}, "description": "(d,) embedding"}
VERIFY_BODY = schemas.multipart_and_json(
    {
        "type": "object",
        "properties": {
            "image1": _SIDE,
            "image2": _SIDE,
            "embedding1": _EMB,
            "embedding2": _EMB,
            "threshold": {"type": "number"},
            "far": {"type": "number"},
        },
    },
    {"image1": "one", "image2": "one"},
)


@router.post(
    "/verify",
    response_model=None,
    responses={200: {"model": schemas.VerifyOut}},
    openapi_extra=VERIFY_BODY,
)
def verify(
    request: Request,
    payload: deps.ImagePair,
    rec: deps.Recognizer,
) -> JSONResponse:
    """Are the faces of ``image1`` and ``image2`` (either may be an ``embeddingN``
    instead) the same person? ``threshold`` or ``far`` choose the decision threshold
    (default: the model's calibrated default); the answer says the FAR it was calibrated at.
    """
    threshold, far = deps.threshold_of(rec, payload)
    emb1, face1 = _side(request, rec, payload, 1)
    emb2, face2 = _side(request, rec, payload, 2)
    result = rec.verify(emb1, emb2, threshold=threshold)
    result = dataclasses.replace(result, face1=face1, face2=face2)
    return JSONResponse(verify_to_json(result, far))


def _side(request: Request, rec: Any, payload: Payload, n: int) -> tuple[np.ndarray, Face | None]:
    uploads = payload.images(f"image{n}")
    emb = payload.get(f"embedding{n}")
    if len(uploads) > 1 or (uploads and emb is not None):
        exc = InvalidArgumentError(f"image{n}: send one image or one embedding{n}, not several")
    elif uploads:
        vec, face = represent(rec, uploads[0])
        request.app.state.metrics.faces.inc()
        return vec, face
    elif emb is not None:
        vec = embedding_from_json(emb, f"embedding{n}")
        d = rec.info.embedding_size
        if vec.shape != (d,) or not np.any(vec):
            exc = EmbeddingError(
                f"embedding{n}: expected a non-zero ({d},) embedding of {rec.info.name}, "
                f"got shape {vec.shape}"
            )
        else:
            return vec, None
    else:
        exc = InvalidArgumentError(f"image{n}: missing; send image{n} or embedding{n}")
    raise exc.about(f"image{n}" if emb is None else f"embedding{n}")
