"""``/v1/detect``, ``/v1/embed`` and ``/v1/model``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ...errors import InvalidArgumentError, NoFaceError, NpcfaceError
from ...image import describe
from .. import deps, schemas
from ..inputs import Payload, decode, rename
from ..pipeline import embed_batch
from ..wire import embedding_to_json, error_body, face_to_json

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


@router.get("/model", response_model=schemas.ModelOut)
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
        "max_pixels": settings.max_pixels,
        "max_body_bytes": settings.max_body_bytes,
    }


@router.post("/detect", response_model=schemas.DetectOut, openapi_extra=IMAGES_BODY)
def detect(
    request: Request,
    payload: deps.Images,
    rec: deps.Recognizer,
) -> dict[str, Any]:
    """Every face in each image (box, landmarks, score, quality if rated), best score first.

    One bad image fails the request (422, naming it).
    """
    uploads = _require_images(payload)
    settings = request.app.state.settings
    out = []
    for up in uploads:
        image = decode(up, settings.max_pixels)
        try:
            faces = rec.detect(image)
        except NpcfaceError as exc:
            raise rename(exc, image, up) from None
        request.app.state.metrics.faces.inc(len(faces))
        out.append({"input": up.ref, "faces": [face_to_json(f) for f in faces]})
    return {"images": out}


@router.post("/embed", response_model=schemas.EmbedOut, openapi_extra=EMBED_BODY)
def embed(
    request: Request,
    payload: deps.Images,
    rec: deps.Recognizer,
) -> dict[str, Any]:
    """Embeddings of the face chosen by the face policy in each image (crops embedded as
    one batch), or of every face with ``all_faces``. Images that fail are answered with
    their error; the others still get embeddings."""
    uploads = _require_images(payload)
    settings = request.app.state.settings
    items: list[dict[str, Any]] = []
    if deps.flag(payload, "all_faces"):
        for up in uploads:
            items.append(_all_faces(request, rec, up, settings.max_pixels))
    else:
        for r in embed_batch(rec, uploads, settings.max_pixels):
            if r.error is not None:
                items.append({"input": r.ref, "ok": False, "faces": [], "error": _err(r.error)})
                continue
            request.app.state.metrics.faces.inc()
            items.append(
                {
                    "input": r.ref,
                    "ok": True,
                    "faces": [
                        {"face": face_to_json(r.face), "embedding": embedding_to_json(r.embedding)}
                    ],
                }
            )
    return {"model": rec.info.name, "images": items}


def _all_faces(request: Request, rec: Any, up: Any, max_pixels: int) -> dict[str, Any]:
    try:
        image = decode(up, max_pixels)
        try:
            embs, faces = rec.represent_all(image)
        except NpcfaceError as exc:
            raise rename(exc, image, up) from None
        if not faces:
            raise rename(NoFaceError(f"{describe(image)}: no face found"), image, up)
    except NpcfaceError as exc:
        exc.input = up.ref  # type: ignore[attr-defined]
        return {"input": up.ref, "ok": False, "faces": [], "error": _err(exc)}
    request.app.state.metrics.faces.inc(len(faces))
    return {
        "input": up.ref,
        "ok": True,
        "faces": [
            {"face": face_to_json(f), "embedding": embedding_to_json(e)}
            for f, e in zip(faces, embs, strict=True)
        ],
    }


def _err(exc: NpcfaceError) -> dict[str, Any]:
    return error_body(exc)[1]


def _require_images(payload: Payload) -> list[Any]:
    uploads = payload.images("images")
    if not uploads:
        exc = InvalidArgumentError("images: send at least one image (multipart files or base64)")
        exc.input = "images"  # type: ignore[attr-defined]
        raise exc
    return uploads
