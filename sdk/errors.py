"""The error hierarchy: one root, specific subclasses, messages that name the input and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .quality import FaceQuality


class NpcfaceError(Exception):
    """Root of every error npcface raises on purpose."""


class InvalidArgumentError(NpcfaceError, ValueError):
    """A public function got an argument it cannot use (unknown option, bad shape, out of range).

    Also a ``ValueError``, so callers that caught ``ValueError`` keep working.
    """


class UnknownNameError(InvalidArgumentError):
    """A registry (detectors, models, backbones, heads) has no entry of that name; the message
    lists the valid ones."""


class EmbeddingError(InvalidArgumentError):
    """An embedding cannot be used: wrong shape or size, zero, or not finite."""


class ImageError(NpcfaceError, ValueError):
    """An input could not be used as an image (unreadable, empty, truncated, too large, bad dtype)."""


class NoFaceError(NpcfaceError):
    """No face was found in an image where one was required."""


class MultipleFacesError(NpcfaceError):
    """Several faces were found where the policy ``single`` required exactly one."""


class LowQualityError(NpcfaceError):
    """A face is too small, blurred or turned to be enrolled; the message says which and the fix.

    Attributes:
        quality: the face's :class:`~npcface.quality.FaceQuality`.
        gate: the minimum overall quality that was required.
    """

    def __init__(self, message: str, quality: FaceQuality | Any, gate: float) -> None:
        super().__init__(message)
        self.quality = quality
        self.gate = gate


class ModelError(NpcfaceError):
    """A model could not be found, verified (SHA-256) or loaded."""


class UnknownModelError(UnknownNameError, ModelError):
    """No detector or model is registered under that name."""


class ProviderError(NpcfaceError):
    """A requested execution provider (GPU, TensorRT) is not available; never silently replaced."""


class GalleryError(NpcfaceError):
    """A gallery operation failed (missing gallery, wrong dimension, unknown identity)."""


class GalleryCorruptError(GalleryError):
    """A gallery's files are corrupt or of an incompatible schema version."""


class GalleryNotFoundError(GalleryError):
    """No gallery at that place: never created, deleted, or replaced by another gallery
    since this handle was opened (open it again)."""


class GalleryExistsError(GalleryError):
    """A gallery exists already where a new one was to be created."""


class GalleryBusyError(GalleryError):
    """The gallery is open for writing elsewhere (another process, or another Gallery object
    in this one); only one writer at a time."""


class GalleryClosedError(GalleryError):
    """The Gallery object was closed; open the gallery again."""


class IdentityNotFoundError(GalleryError):
    """The gallery holds no identity of that name (or no template of that id)."""


class MissingExtraError(NpcfaceError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional dependency '{module}': pip install 'npcface[{extra}]'"
        )
        self.extra = extra
        self.module = module


class GalleryArgumentError(GalleryError, InvalidArgumentError):
    """A gallery method got an argument it cannot use (bad name, ``k``, threshold, setting,
    search parameter or path); a :class:`GalleryError` and a ``ValueError`` too."""


class RequestKeyReusedError(GalleryArgumentError):
    """A request key (an ``Idempotency-Key``) was used before for another request."""


class GalleryEmbeddingError(GalleryArgumentError, EmbeddingError):
    """Vectors a gallery cannot store or search: wrong shape or dimension, NaN, all zero."""
