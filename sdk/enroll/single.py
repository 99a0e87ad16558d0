"""Images in, gallery matches out: enrolment and identification of single images.

``FaceRecognizer.enroll`` and ``FaceRecognizer.identify`` delegate here. Faces go through the
recogniser's own pipeline (:meth:`~npcface.FaceRecognizer.embed_many`), the one ``verify``
uses, so enrolment and search embeddings are comparable. The gallery only sees vectors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GalleryError
from ..results import Match
from ..validate import check_threshold

log = logging.getLogger(__name__)


def check_model(recognizer: Any, gallery: Any) -> None:
    """Refuse a recogniser whose embeddings are not the gallery's; record it on first use.

    Raises:
        GalleryError: the gallery was enrolled with another model or dimension.
    """
    info = recognizer.info
    if info.embedding_size != gallery.dim:
        raise GalleryError(
            f"{gallery.path}: gallery holds {gallery.dim}-dimensional embeddings, recogniser "
            f"{info.name} makes {info.embedding_size}-dimensional ones; use the model the "
            "gallery was enrolled with"
        )
    if gallery.model is None:
        if not gallery.readonly:
            gallery.set_model(info.name)
    elif gallery.model != info.name:
        raise GalleryError(
            f"{gallery.path}: gallery was enrolled with model {gallery.model!r}, this recogniser "
            f"is {info.name!r}; embeddings of different models are not comparable"
        )


def enroll(
    recognizer: Any,
    gallery: Any,
    identity: str,
    images: Sequence[Any],
    metadata: dict[str, Any] | None = None,
) -> list[int]:
    """Enroll the face of each image under ``identity``: all images or none.

    Args:
        recognizer: the :class:`~npcface.FaceRecognizer` to embed with.
        gallery: an open, writable gallery.
        identity: the person's name.
        images: one or more images of that person (one face used per image, chosen by the
            recogniser's face policy).
        metadata: merged into the identity's metadata.

    Returns:
        The new template ids, one per image.

    Raises:
        NoFaceError: an image has no face (nothing is enrolled).
        ImageError: an image cannot be read (nothing is enrolled).
        GalleryError: the gallery belongs to another model, or is read-only.
    """
    images = list(images)
    if not images:
        raise GalleryError(f"no images given to enroll {identity!r}")
    check_model(recognizer, gallery)
    results = recognizer.embed_many(images, min_quality=getattr(recognizer, "enroll_quality", None))
    for r in results:
        if not r.ok:
            raise r.error
    sources = [str(img) if isinstance(img, (str, os.PathLike)) else None for img in images]
    return gallery.add(
        identity, np.stack([r.embedding for r in results]), metadata, sources=sources
    )


def identify(
    recognizer: Any,
    gallery: Any,
    image: Any,
    k: int = 5,
    threshold: float | None = None,
) -> list[Match]:
    """The ``k`` most similar identities to the face in ``image``.

    Args:
        recognizer: the :class:`~npcface.FaceRecognizer` to embed with.
        gallery: an open gallery (read-only is fine).
        image: an image, or a (d,) embedding from the same model.
        k: identities to return.
        threshold: if given, only matches with similarity >= threshold (open-set use; the
            recogniser's ``default_threshold()`` is a good start). ``None`` returns the top k.

    Returns:
        Matches, most similar first; empty when nobody passes the threshold.

    Raises:
        NoFaceError: no face in the image. ImageError: unreadable image.
        InvalidArgumentError: the threshold is not a cosine similarity in [-1, 1].
    """
    if threshold is not None:
        threshold = check_threshold(threshold)
    check_model(recognizer, gallery)
    arr = image if isinstance(image, np.ndarray) and image.ndim == 1 else None
    emb = arr if arr is not None else recognizer.represent(image)[0]
    matches = gallery.search(emb, k=k)[0]
    if threshold is not None:
        matches = [m for m in matches if m.similarity >= threshold]
    return matches
