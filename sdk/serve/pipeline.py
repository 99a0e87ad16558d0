"""The library calls the service makes: everything goes through the public API.

Uploads reach the recogniser as the encoded bytes they arrived as, so the library decodes
and checks them exactly as it would a file; errors are renamed after the upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GalleryArgumentError, IdentityNotFoundError, NoFaceError, NpcfaceError
from ..gallery.checks import check_threshold
from ..image import describe
from ..results import EmbedResult, Face, Match
from .inputs import Upload, rename

__all__ = [
    "detect",
    "embed_batch",
    "represent",
    "represent_all",
    "require_identity",
    "search",
]


def embed_batch(rec: Any, uploads: Sequence[Upload]) -> list[EmbedResult]:
    """One face per upload (the recogniser's face policy), crops embedded as one batch;
    failures are values (``error``, with ``input`` set to the upload's ref), in order."""
    results = rec.embed_many([u.data for u in uploads], names=[u.label for u in uploads])
    out = []
    for r, up in zip(results, uploads, strict=True):
        if r.error is not None and isinstance(r.error, NpcfaceError):
            r = EmbedResult(
                r.index, r.name, r.face, r.embedding, rename(r.error, up), r.faces_found
            )
        out.append(r)
    return out


def detect(rec: Any, upload: Upload) -> list[Face]:
    """Every face in an upload, best score first."""
    try:
        return rec.detect(upload.data)
    except NpcfaceError as exc:
        raise rename(exc, upload) from None


def represent(rec: Any, upload: Upload) -> tuple[np.ndarray, Face]:
    """Embedding and face of the face chosen by the face policy."""
    try:
        return rec.represent(upload.data)
    except NpcfaceError as exc:
        raise rename(exc, upload) from None


def represent_all(rec: Any, upload: Upload) -> tuple[np.ndarray, list[Face]]:
    """Embeddings (N, d) and faces of every face; NoFaceError when there is none."""
    try:
        embs, faces = rec.represent_all(upload.data)
    except NpcfaceError as exc:
        raise rename(exc, upload) from None
    if not faces:
        raise rename(NoFaceError(f"{describe(upload.data)}: no face found"), upload)
    return embs, faces


def search(gallery: Any, queries: np.ndarray, k: int, threshold: float | None) -> list[list[Match]]:
    """Top ``k`` identities per query, only those at or above ``threshold`` when given.

    Raises:
        GalleryArgumentError: a threshold the gallery's own check refuses (for cosine
            galleries: not a finite number in [-1, 1], as ``verify`` refuses it).
    """
    if threshold is not None:
        try:
            threshold = check_threshold(threshold, gallery.metric)
        except GalleryArgumentError as exc:
            raise exc.about("threshold") from None
    rows = gallery.search(queries, k=k)
    if threshold is None:
        return rows
    return [[m for m in row if m.similarity >= threshold] for row in rows]


def require_identity(gallery: Any, identity: str) -> None:
    """Raises IdentityNotFoundError (404) unless ``identity`` is enrolled."""
    if identity not in gallery:
        raise IdentityNotFoundError(
            f"no identity {identity!r} in gallery {gallery.path.name!r}",
            input=identity,
        )
