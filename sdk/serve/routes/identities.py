"""``/v1/galleries/{name}/identities``: enrol images or embeddings, list, get, delete."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from ...errors import EmbeddingError, InvalidArgumentError
from .. import deps, schemas
from ..pipeline import check_model, embed_batch, require_identity

router = APIRouter(prefix="/v1/galleries/{name}/identities", tags=["identities"])

ENROLL_BODY = schemas.multipart_and_json(schemas.EnrollIn.model_json_schema(), {"images": "many"})


@router.get(
    "",
    response_model=None,
    responses={200: {"model": schemas.IdentityPage}},
    dependencies=[Depends(deps.can_read)],
)
def list_identities(
    request: Request,
    name: deps.GalleryName,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Identities in enrolment order with their template counts, a page at a time."""
    with request.app.state.galleries.reader(name) as g:
        counts = list(g.template_counts().items())
    page = counts[offset : offset + limit]
    return {
        "total": len(counts),
        "offset": offset,
        "limit": limit,
        "identities": [{"identity": n, "templates": c} for n, c in page],
    }


@router.post(
    "/{identity:path}",
    response_model=None,
    responses={201: {"model": schemas.EnrollOut}},
    status_code=201,
    openapi_extra=ENROLL_BODY,
    dependencies=[Depends(deps.can_write)],
)
def enroll(
    request: Request,
    identity: str,
    name: deps.GalleryName,
    payload: deps.Images,
    rec: deps.Recognizer,
) -> dict[str, Any]:
    """Add templates to ``identity`` (created if new): the face of each image (one batch;
    all images or none), or the given ``embeddings``. ``metadata`` is merged into the
    identity's. The template ids are durable when the answer arrives."""
    metadata = deps.mapping(payload, "metadata")
    uploads, embeddings = payload.images("images"), payload.get("embeddings")
    if bool(uploads) == (embeddings is not None):
        exc = InvalidArgumentError("send images or embeddings (one of them)")
        exc.input = "images"  # type: ignore[attr-defined]
        raise exc
    galleries = request.app.state.galleries
    if uploads:
        results = embed_batch(rec, uploads)
        for r in results:
            if r.error is not None:
                raise r.error
        request.app.state.metrics.faces.inc(len(results))
        vecs = np.stack([r.embedding for r in results])
        with galleries.writer(name) as g:
            check_model(rec, g)
            ids = g.add(identity, vecs, metadata, sources=[u.label for u in uploads])
    else:
        vecs = _matrix(embeddings)
        with galleries.writer(name) as g:
            ids = g.add(identity, vecs, metadata)
    return {"identity": identity, "template_ids": ids}


@router.get(
    "/{identity:path}",
    response_model=None,
    responses={200: {"model": schemas.IdentityOut}},
    dependencies=[Depends(deps.can_read)],
)
def get_identity(request: Request, identity: str, name: deps.GalleryName) -> dict[str, Any]:
    """One identity: its template ids and metadata."""
    with request.app.state.galleries.reader(name) as g:
        require_identity(g, identity)
        ids = g.templates(identity)
        meta = g.metadata(identity)
    return {"identity": identity, "templates": len(ids), "template_ids": ids, "metadata": meta}


@router.delete(
    "/{identity:path}",
    response_model=None,
    responses={200: {"model": schemas.DeletedOut}},
    dependencies=[Depends(deps.can_write)],
)
def delete_identity(request: Request, identity: str, name: deps.GalleryName) -> dict[str, Any]:
    """Delete an identity and all its templates."""
    with request.app.state.galleries.writer(name) as g:
        require_identity(g, identity)
        removed = g.remove(identity)
    return {"deleted": identity, "templates": removed}


def _matrix(values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise EmbeddingError("embeddings: expected a list of equal-length number lists") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not arr.size:
        raise EmbeddingError(f"embeddings: expected (n, d) numbers, got shape {arr.shape}")
    return arr
