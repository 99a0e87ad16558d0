"""``/v1/detect``, ``/v1/embed`` and ``/v1/model``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...errors import InvalidArgumentError, NpcfaceError
from ...image import DEFAULT_MAX_PIXELS
from ...wire import embedding_to_json, error_body, face_to_json
from .. import deps, pipeline, schemas
from ..inputs import Payload

router = APIRouter(prefix="/v1", tags=["faces"], dependencies=[Depends(deps.can_read)])

IMAGES_JSON = {
    "type": "object",
    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "byte"}}},
    "required": ["images"],
}
IMAGES_BODY = schemas.multipart_and_json(IMAGES_JSON, {"images": "many"})
EMBED_BODY = schemas.multipart_and_json(
    {
        **IMAGES_JSON,
        "properties": {**IMAGES_JSON["properties"], "all_faces": {"type": "boolean"}},
    },
    {"images": "many"},
)


@router.get("/model", response_model=None, responses={200: {"model": schemas.ModelOut}})
def model(request: Request, rec: deps.Recognizer) -> dict[str, Any]:
    """The recogniser the service runs, its calibrated thresholds and the request limits."""
    info, settings = rec.info, request.app.state.settings
    return {
        "name": info.name,
        "input_size": info.input_size,
        "embedding_size": info.embedding_size,
        "thresholds": info.thresholds,
        "face_policy": rec.face_policy,
        "max_images": settings.max_images,
        "max_pixels": rec.max_pixels or DEFAULT_MAX_PIXELS,
        "max_body_bytes": settings.max_body_bytes,
    }


@router.post(
    "/detect",
    response_model=None,
    responses={200: {"model": schemas.DetectOut}},
    openapi_extra=IMAGES_BODY,
)
def detect(request: Request, payload: deps.Images, rec: deps.Recognizer) -> JSONResponse:
    """Every face in each image (box, landmarks, score, quality if rated), best score first.

    One bad image fails the request (422, naming it).
    """
    out = []
    for up in _require_images(payload):
        faces = pipeline.detect(rec, up)
        request.app.state.metrics.faces.inc(len(faces))
        out.append({"input": up.ref, "faces": [face_to_json(f) for f in faces]})
    return JSONResponse({"images": out})


@router.post(
    "/embed",
    response_model=None,
    responses={200: {"model": schemas.EmbedOut}},
    openapi_extra=EMBED_BODY,
)
def embed(request: Request, payload: deps.Images, rec: deps.Recognizer) -> JSONResponse:
    """Embeddings of the face chosen by the face policy in each image (crops embedded as
    one batch), or of every face with ``all_faces``. Images that fail are answered with
    their error; the others still get embeddings."""
    uploads = _require_images(payload)
    items: list[dict[str, Any]] = []
    if deps.flag(payload, "all_faces"):
        for up in uploads:
            try:
                embs, faces = pipeline.represent_all(rec, up)
            except NpcfaceError as exc:
                items.append({"input": up.ref, "ok": False, "faces": [], "error": _err(exc)})
                continue
            items.append(_item(up.ref, faces, embs))
    else:
        for r, up in zip(pipeline.embed_batch(rec, uploads), uploads, strict=True):
            if r.error is not None:
                items.append({"input": up.ref, "ok": False, "faces": [], "error": _err(r.error)})
            else:
                items.append(_item(up.ref, [r.face], [r.embedding]))
    request.app.state.metrics.faces.inc(sum(len(i["faces"]) for i in items))
    return JSONResponse({"model": rec.info.name, "images": items})


def _item(ref: str, faces: list[Any], embs: Any) -> dict[str, Any]:
    return {
        "input": ref,
        "ok": True,
        "faces": [
            {"face": face_to_json(f), "embedding": embedding_to_json(e)}
            for f, e in zip(faces, embs, strict=True)
        ],
    }


def _err(exc: Exception) -> dict[str, Any]:
    return error_body(exc)[1]


def _require_images(payload: Payload) -> list[Any]:
    uploads = payload.images("images")
    if not uploads:
        raise InvalidArgumentError(
            "images: send at least one image (multipart files or base64)", input="images"
        )
    return uploads
