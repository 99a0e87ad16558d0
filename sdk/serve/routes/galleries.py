"""``/v1/galleries``: create, list, inspect, delete; identify faces and search embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ...errors import EmbeddingError, InvalidArgumentError
from ...wire import face_to_json, match_to_json
from .. import deps, schemas
from ..inputs import Payload
from ..pipeline import represent, represent_all, search

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])

IDENTIFY_BODY = schemas.multipart_and_json(
    {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "byte", "description": "base64 image"},
            "k": {"type": "integer", "default": 5},
            "threshold": {"type": "number"},
            "far": {"type": "number"},
            "all_faces": {"type": "boolean", "default": False},
        },
        "required": ["image"],
    },
    {"image": "one"},
)


@router.post(
    "",
    response_model=None,
    responses={201: {"model": schemas.GalleryOut}},
    status_code=201,
    dependencies=[Depends(deps.can_write)],
)
def create_gallery(
    request: Request, body: schemas.GalleryIn, rec: deps.Recognizer
) -> dict[str, Any]:
    """Create an empty gallery for the server's recogniser (or for ``dim``-dimensional
    embeddings of another ``model``). 409 ``gallery_exists`` if the name is taken."""
    info = rec.info
    dim = body.dim if body.dim is not None else info.embedding_size
    model = body.model if body.model is not None or body.dim is not None else info.name
    created = request.app.state.galleries.create(
        body.name, dim=dim, metric=body.metric, index=body.index, dtype=body.dtype, model=model
    )
    return {"name": body.name, **_public(created)}


@router.get(
    "",
    response_model=None,
    responses={200: {"model": schemas.GalleryList}},
    dependencies=[Depends(deps.can_read)],
)
def list_galleries(request: Request) -> dict[str, Any]:
    """Names of the galleries under the server's gallery root."""
    return {"galleries": request.app.state.galleries.names()}


@router.get(
    "/{name}",
    response_model=None,
    responses={200: {"model": schemas.GalleryOut}},
    dependencies=[Depends(deps.can_read)],
)
def gallery_info(request: Request, name: deps.GalleryName) -> dict[str, Any]:
    """Settings and size of a gallery."""
    with request.app.state.galleries.reader(name) as g:
        return {"name": name, **_public(g.info())}


@router.delete(
    "/{name}",
    response_model=None,
    responses={200: {"model": schemas.DeletedOut}},
    dependencies=[Depends(deps.can_write)],
)
def delete_gallery(request: Request, name: deps.GalleryName) -> dict[str, Any]:
    """Delete a gallery and all its files."""
    request.app.state.galleries.delete(name)
    return {"deleted": name}


@router.post(
    "/{name}/identify",
    response_model=None,
    responses={200: {"model": schemas.IdentifyOut}},
    openapi_extra=IDENTIFY_BODY,
    dependencies=[Depends(deps.can_read)],
)
def identify(
    request: Request,
    name: deps.GalleryName,
    payload: deps.Image,
    rec: deps.Recognizer,
) -> JSONResponse:
    """Who is in the image? The top ``k`` identities for the face chosen by the face
    policy, or for every face with ``all_faces``. Open set: with ``threshold`` (or ``far``)
    only matches at or above it are listed, so an unknown face gets an empty list."""
    settings = request.app.state.settings
    k = deps.integer(payload, "k", 5, 1, settings.max_k)
    threshold, far = deps.threshold_of(rec, payload)
    every = deps.flag(payload, "all_faces")
    uploads = payload.images("image")
    if len(uploads) != 1:
        raise InvalidArgumentError(
            f"image: send exactly one image, got {len(uploads)}", input="image"
        )
    if every:
        embs, faces = represent_all(rec, uploads[0])
    else:
        emb, face = represent(rec, uploads[0])
        embs, faces = emb[None], [face]
    request.app.state.metrics.faces.inc(len(faces))
    with request.app.state.galleries.reader(name) as g:
        g.check_model(rec.info.name, rec.info.embedding_size)
        rows = search(g, embs, k, threshold)
    return JSONResponse(
        {
            "threshold": threshold,
            "far": far,
            "faces": [
                {"face": face_to_json(f), "matches": [match_to_json(m) for m in row]}
                for f, row in zip(faces, rows, strict=True)
            ],
        }
    )


@router.post(
    "/{name}/search",
    response_model=None,
    responses={200: {"model": schemas.SearchOut}},
    dependencies=[Depends(deps.can_read)],
)
def search_embeddings(
    request: Request,
    body: schemas.SearchIn,
    name: deps.GalleryName,
    rec: deps.Recognizer,
) -> JSONResponse:
    """The top ``k`` identities for each of a batch of embeddings (one search)."""
    settings = request.app.state.settings
    if not 1 <= body.k <= settings.max_k:
        raise InvalidArgumentError(f"k: must be an integer in [1, {settings.max_k}]", input="k")
    payload = Payload(fields={"threshold": body.threshold, "far": body.far})
    threshold, far = deps.threshold_of(rec, payload, default=False)
    try:
        queries = np.asarray(body.embeddings, dtype=np.float32)
    except ValueError:
        raise EmbeddingError("embeddings: rows of different lengths") from None
    if queries.ndim != 2 or not len(queries):
        raise EmbeddingError(f"embeddings: expected (n, d) with n >= 1, got {queries.shape}")
    with request.app.state.galleries.reader(name) as g:
        rows = search(g, queries, body.k, threshold)
    return JSONResponse(
        {
            "threshold": threshold,
            "far": far,
            "matches": [[match_to_json(m) for m in row] for row in rows],
        }
    )


def _public(info: Any) -> dict[str, Any]:
    """A GalleryInfo without the server's file paths."""
    return {k: v for k, v in info.to_dict().items() if k != "path"}
