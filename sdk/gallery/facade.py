"""Images in, gallery matches out: the recogniser side of a gallery.

``FaceRecognizer.enroll`` and ``FaceRecognizer.identify`` delegate here. Faces go through the
recogniser's own pipeline (detect, pick one face by its face policy, align, embed), the one
``verify`` uses, so enrolment and search embeddings are comparable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GalleryError, ImageError, NoFaceError
from ..image import describe
from ..quality import LowQualityError, check_enrollable, with_quality
from ..results import Face, Match
from .gallery import Gallery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceEmbedding:
    """The embedding of the face chosen in one image.

    Attributes:
        index: position of the image in the input sequence.
        embedding: (d,) float32 unit vector.
        face: the detected face that was embedded.
    """

    index: int
    embedding: np.ndarray
    face: Face


@dataclass(frozen=True)
class ImageFailure:
    """An image that gave no embedding, and why.

    Attributes:
        index: position of the image in the input sequence.
        kind: ``unreadable``, ``no_face``, ``low_quality`` or ``error`` (anything else, e.g. several faces
            under policy ``single``).
        reason: the error message (names the image).
    """

    index: int
    kind: str
    reason: str


def embed_images(
    recognizer: Any,
    images: Sequence[Any],
    names: Sequence[str] | None = None,
    strict: bool = False,
    gate: bool = False,
) -> tuple[list[FaceEmbedding], list[ImageFailure]]:
    """Detect, select, align and embed one face per image; crops are embedded in one batch.

    Args:
        recognizer: a :class:`~npcface.FaceRecognizer` (or an object with its ``load``,
            ``detect``, ``align``, ``embed_crops`` and ``face_policy``).
        images: paths, bytes or decoded BGR arrays.
        names: names for error messages (default: derived from the inputs).
        strict: raise the first per-image error instead of collecting it.
        gate: refuse faces below the recogniser's ``enroll_quality``
            (:class:`~npcface.quality.LowQualityError`, kind ``low_quality``).

    Returns:
        ``(embeddings, failures)``: one entry per image in one of the two lists.
    """
    done: list[tuple[int, Face, np.ndarray]] = []
    failures: list[ImageFailure] = []
    for i, image in enumerate(images):
        name = names[i] if names is not None else describe(image)
        try:
            face, crop = (enroll_crop if gate else crop_face)(recognizer, image, name)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop a batch
            if strict:
                raise
            failures.append(failure_of(i, exc, name))
            continue
        done.append((i, face, crop))
    if not done:
        return [], failures
    embs = recognizer.embed_crops(np.stack([c for _, _, c in done]))
    return [FaceEmbedding(i, embs[j], f) for j, (i, f, _) in enumerate(done)], failures


def crop_face(recognizer: Any, image: Any, name: str) -> tuple[Face, np.ndarray]:
    """Detect faces, choose one by the recogniser's face policy, return it and its aligned
    (S, S, 3) uint8 BGR crop.

    Raises:
        ImageError: the image cannot be used. NoFaceError: no face in it.
        MultipleFacesError: several faces under policy ``single``.
    """
    from ..recognizer import select_face

    img = recognizer.load(image)
    faces = recognizer.detect(img)
    face = select_face(faces, img.shape, recognizer.face_policy, name)
    return face, recognizer.align(img, face)[0]


def enroll_crop(recognizer: Any, image: Any, name: str) -> tuple[Face, np.ndarray]:
    """:func:`crop_face`, then the enrolment quality gate (the recogniser's ``enroll_quality``).

    Raises:
        LowQualityError: the face is below the gate (and what :func:`crop_face` raises).
    """
    face, crop = crop_face(recognizer, image, name)
    gate = getattr(recognizer, "enroll_quality", 0.0)
    if gate:
        if face.quality is None:
            face = with_quality(face, crop)
        check_enrollable(face, gate, name)
    return face, crop


def failure_of(index: int, exc: BaseException, name: str) -> ImageFailure:
    """Classify a per-image exception for a report."""
    if isinstance(exc, ImageError):
        return ImageFailure(index, "unreadable", str(exc))
    if isinstance(exc, NoFaceError):
        return ImageFailure(index, "no_face", str(exc))
    if isinstance(exc, LowQualityError):
        return ImageFailure(index, "low_quality", str(exc))
    return ImageFailure(index, "error", f"{name}: {type(exc).__name__}: {exc}")


def check_model(recognizer: Any, gallery: Gallery) -> None:
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
    gallery: Gallery,
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
        LowQualityError: a face is below the recogniser's ``enroll_quality`` gate (nothing
            is enrolled).
        ImageError: an image cannot be read (nothing is enrolled).
        GalleryError: the gallery belongs to another model, or is read-only.
    """
    images = list(images)
    if not images:
        raise GalleryError(f"no images given to enroll {identity!r}")
    check_model(recognizer, gallery)
    embs, _ = embed_images(recognizer, images, strict=True, gate=True)
    sources = [str(img) if isinstance(img, (str, os.PathLike)) else None for img in images]
    return gallery.add(identity, np.stack([e.embedding for e in embs]), metadata, sources=sources)


def identify(
    recognizer: Any,
    gallery: Gallery,
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
    """
    check_model(recognizer, gallery)
    arr = image if isinstance(image, np.ndarray) and image.ndim == 1 else None
    emb = arr if arr is not None else recognizer.represent(image)[0]
    matches = gallery.search(emb, k=k)[0]
    if threshold is not None:
        matches = [m for m in matches if m.similarity >= float(threshold)]
    return matches
