"""``/v1/galleries/{name}/identities``: enrol images or embeddings, list, get, delete.

Identity names are data: any name the library accepts (:func:`npcface.gallery.checks.
check_name`), sent percent-encoded as one path segment (``/``, ``.``, ``..``, ``%`` and
line breaks included); they are stored in Unicode NFC. Enrolment is exactly once: an image
(or embedding) whose content the identity holds already is not stored again, and an
``Idempotency-Key`` header makes a retried request return the first answer and write
nothing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from ...errors import (
    EmbeddingError,
    GalleryArgumentError,
    InvalidArgumentError,
    RequestKeyReusedError,
)
from ...gallery.checks import check_name
from .. import deps, schemas
from ..pipeline import embed_batch, require_identity


class _NameConvertor(Convertor[str]):
    """A path parameter of any characters, line breaks and slashes included (Starlette's
    ``path`` stops at a line break, and a name is data, not a route)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("name", _NameConvertor())

router = APIRouter(prefix="/v1/galleries/{name}/identities", tags=["identities"])

ENROLL_BODY = schemas.multipart_and_json(schemas.EnrollIn.model_json_schema(), {"images": "many"})
ENROLL_BODY["parameters"] = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": "a key of the client's choosing: a retry with the same key and body "
        "gets the first answer and writes nothing (kept 24 hours)",
    }
]
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


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
    "/{identity:name}",
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
    identity's. Exactly once: inputs whose content the identity holds already are skipped
    (their template ids are returned), and a request repeated with the same
    ``Idempotency-Key`` gets the first answer. The template ids are durable when the answer
    arrives; a 503 ``timeout`` answer means nothing was written."""
    identity = _identity(identity)
    key = _idempotency_key(request)
    metadata = deps.mapping(payload, "metadata")
    uploads, embeddings = payload.images("images"), payload.get("embeddings")
    if bool(uploads) == (embeddings is not None):
        raise deps.bad("images", "send images or embeddings (one of them)")
    galleries = request.app.state.galleries
    if uploads:
        results = embed_batch(rec, uploads)
        for r in results:
            if r.error is not None:
                raise r.error
        request.app.state.metrics.faces.inc(len(results))
        vecs = np.stack([r.embedding for r in results])
        hashes = [hashlib.sha256(u.data).hexdigest() for u in uploads]
        sources = [u.label for u in uploads]
    else:
        vecs, hashes, sources = _matrix(embeddings), None, None
    with galleries.writer(name) as g:
        if uploads:
            g.check_model(rec.info.name, rec.info.embedding_size)
        try:
            done = g.add_once(
                identity, vecs, metadata, content_hashes=hashes, sources=sources, request_key=key
            )
        except RequestKeyReusedError as exc:
            raise exc.about("Idempotency-Key") from None
    return {
        "identity": identity,
        "template_ids": list(done.template_ids),
        "added": done.new,
        "existing": len(done.added) - done.new,
        "replayed": done.replayed,
    }


@router.get(
    "/{identity:name}",
    response_model=None,
    responses={200: {"model": schemas.IdentityOut}},
    dependencies=[Depends(deps.can_read)],
)
def get_identity(request: Request, identity: str, name: deps.GalleryName) -> dict[str, Any]:
    """One identity: its template ids and metadata. 404 ``identity_not_found``."""
    with request.app.state.galleries.reader(name) as g:
        require_identity(g, identity)
        ids = g.templates(identity)
        meta = g.metadata(identity)
    return {
        "identity": _identity(identity),
        "templates": len(ids),
        "template_ids": ids,
        "metadata": meta,
    }


@router.delete(
    "/{identity:name}",
    response_model=None,
    responses={200: {"model": schemas.DeletedOut}},
    dependencies=[Depends(deps.can_write)],
)
def delete_identity(request: Request, identity: str, name: deps.GalleryName) -> dict[str, Any]:
    """Delete an identity and all its templates. When the answer arrives they are gone from
    every answer and from every file of the gallery. 404 ``identity_not_found``."""
    with request.app.state.galleries.writer(name) as g:
        require_identity(g, identity)
        removed = g.remove(identity)
    return {"deleted": _identity(identity), "templates": removed}


def _identity(identity: str) -> str:
    """The name as the library stores it (NFC), or the library's error (400) for a name it
    refuses."""
    try:
        return check_name(identity)
    except GalleryArgumentError as exc:
        raise exc.about("identity") from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise InvalidArgumentError(
            "Idempotency-Key: use 1 to 255 printable ASCII characters without spaces "
            "(a UUID is a good key)",
            input="Idempotency-Key",
        )
    return key


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
