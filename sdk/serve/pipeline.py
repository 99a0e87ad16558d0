"""The library calls the service makes: everything goes through the public API.

Images arrive decoded (:func:`npcface.serve.inputs.decode`), so errors name the upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImageError, MultipleFacesError, NoFaceError, NpcfaceError
from ..results import Face, Match
from .inputs import Upload, decode, rename
from .wire import ServiceError


@dataclass(frozen=True)
class Embedded:
    """One image of a batch: its face and (d,) embedding, or the error that stopped it."""

    index: int
    ref: str
    face: Face | None
    embedding: np.ndarray | None
    error: NpcfaceError | None


def embed_batch(rec: Any, uploads: Sequence[Upload], max_pixels: int) -> list[Embedded]:
    """Decode the uploads and embed one face per image (the recogniser's face policy), all
    crops in one batch; failures are values, one result per upload, in order."""
    arrays: list[np.ndarray | None] = []
    errors: list[NpcfaceError | None] = []
    for up in uploads:
        try:
            arrays.append(decode(up, max_pixels))
            errors.append(None)
        except ImageError as exc:
            arrays.append(None)
            errors.append(exc)
    ok = [i for i, a in enumerate(arrays) if a is not None]
    got = _embed_many(rec, [arrays[i] for i in ok], [uploads[i].label for i in ok])
    out: list[Embedded] = []
    for i, up in enumerate(uploads):
        if errors[i] is not None:
            out.append(Embedded(i, up.ref, None, None, errors[i]))
            continue
        face, emb, err = got[ok.index(i)]
        if err is not None:
            err.input = up.ref  # type: ignore[attr-defined]
        out.append(Embedded(i, up.ref, face, emb, err))
    return out


def _embed_many(
    rec: Any, arrays: list[np.ndarray], names: list[str]
) -> list[tuple[Face | None, np.ndarray | None, NpcfaceError | None]]:
    if not arrays:
        return []
    if hasattr(rec, "embed_many"):  # the one batched pipeline (npcface >= issue 9)
        return [(r.face, r.embedding, r.error) for r in rec.embed_many(arrays, names=names)]
    from ..gallery.facade import embed_images

    done, failures = embed_images(rec, arrays, names=names)
    res: list[Any] = [None] * len(arrays)
    for e in done:
        res[e.index] = (e.face, e.embedding, None)
    kinds = {"unreadable": ImageError, "no_face": NoFaceError}
    for f in failures:
        cls = kinds.get(f.kind, MultipleFacesError if "faces found" in f.reason else NpcfaceError)
        res[f.index] = (None, None, cls(f.reason))
    return res


def check_model(rec: Any, gallery: Any) -> None:
    """Refuse a gallery of another model or dimension (the library's own check)."""
    try:
        from ..enroll import check_model as library_check
    except ImportError:  # before npcface.enroll existed
        from ..gallery.facade import check_model as library_check
    library_check(rec, gallery)


def enroll(
    rec: Any, gallery: Any, identity: str, arrays: list[np.ndarray], metadata: dict | None
) -> list[int]:
    """Enrol the face of each image under ``identity``: all or none (library semantics)."""
    return rec.enroll(gallery, identity, arrays, metadata=metadata)


def represent(rec: Any, image: np.ndarray, upload: Upload) -> tuple[np.ndarray, Face]:
    try:
        return rec.represent(image)
    except NpcfaceError as exc:
        raise rename(exc, image, upload) from None


def search(gallery: Any, queries: np.ndarray, k: int, threshold: float | None) -> list[list[Match]]:
    """Top ``k`` identities per query, only those at or above ``threshold`` when given."""
    rows = gallery.search(queries, k=k)
    if threshold is None:
        return rows
    return [[m for m in row if m.similarity >= threshold] for row in rows]


def require_identity(gallery: Any, identity: str) -> None:
    """Raises ServiceError ``identity_not_found`` (404) unless ``identity`` is enrolled."""
    if identity not in gallery:
        raise ServiceError(
            "identity_not_found",
            f"no identity {identity!r} in gallery {gallery.path.name!r}",
            input=identity,
        )
