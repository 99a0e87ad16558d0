"""npcface: face detection, alignment, embedding, verification and identification.

>>> from npcface import FaceRecognizer
>>> FaceRecognizer().verify("a.jpg", "b.jpg").verified  # doctest: +SKIP

Nothing is loaded at import time: models load on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    EmbeddingError,
    GalleryCorruptError,
    GalleryError,
    ImageError,
    InvalidArgumentError,
    LowQualityError,
    MissingExtraError,
    ModelError,
    MultipleFacesError,
    NoFaceError,
    NpcfaceError,
    ProviderError,
)
from .image import load_image
from .modelinfo import RecognizerInfo
from .quality import FaceQuality
from .recognizer import FaceRecognizer, cosine_similarity
from .results import Face, Match, VerifyResult

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The gallery pulls in FAISS; import it only when asked for.
    if name == "Gallery":
        from .gallery import Gallery

        return Gallery
    raise AttributeError(f"module 'npcface' has no attribute {name!r}")


__all__ = [
    "EmbeddingError",
    "InvalidArgumentError",
    "Face",
    "FaceQuality",
    "FaceRecognizer",
    "Gallery",
    "GalleryCorruptError",
    "GalleryError",
    "ImageError",
    "LowQualityError",
    "Match",
    "MissingExtraError",
    "ModelError",
    "MultipleFacesError",
    "NoFaceError",
    "NpcfaceError",
    "ProviderError",
    "RecognizerInfo",
    "VerifyResult",
    "cosine_similarity",
    "load_image",
]
