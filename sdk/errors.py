"""The error hierarchy: one root, specific subclasses, messages that name the input and the fix.

Every class carries its API ``code`` and the HTTP ``status`` the service answers it with (class
attributes), and every error the ``input`` it is about (``images[2]``, a field, a gallery or
identity name; ``None`` when there is none). The service's status table and the client's
reverse table are built from these classes (:mod:`npcface.wire`); nothing matches messages.

This module imports nothing of npcface, so every other module may import it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NpcfaceError(Exception):
    """Root of every error npcface raises on purpose.

    Args:
        message: what went wrong, naming the input and, where there is one, the fix.
        input: the offending input (``images[1]``, ``threshold``, a gallery), if any.

    Attributes:
        code: the API's error code (class attribute).
        status: the HTTP status the service answers with (class attribute).
        input: as given.
    """

    code: ClassVar[str] = "npcface_error"
    status: ClassVar[int] = 400

    def __init__(self, *args: Any, input: str | None = None) -> None:
        super().__init__(*args)
        self.input = input

    def about(self, input: str | None) -> NpcfaceError:
        """This error with ``input`` set (for re-raising it where the input is known)."""
        self.input = input
        return self


class InvalidArgumentError(NpcfaceError, ValueError):
    """A public function got an argument it cannot use (unknown option, bad shape, out of range).

    Also a ``ValueError``, so callers that caught ``ValueError`` keep working.
    """

    code = "invalid_argument"


class TooManyImagesError(InvalidArgumentError):
    """More images in one request than the service takes (its ``--max-images``)."""

    code = "too_many_images"


class PayloadTooLargeError(InvalidArgumentError):
    """A request body over the service's limit (its ``--max-body-mb``)."""

    code = "payload_too_large"
    status = 413


class TooManyStreamsError(NpcfaceError):
    """The service already runs as many stream monitors as it may (its ``--max-streams``);
    stop one first."""

    code = "too_many_streams"
    status = 429


class UnknownNameError(InvalidArgumentError):
    """A registry (detectors, models, backbones, heads) has no entry of that name; the message
    lists the valid ones."""

    code = "unknown_name"


class EmbeddingError(InvalidArgumentError):
    """An embedding cannot be used: wrong shape or size, zero, or not finite."""

    code = "embedding_error"


class ImageError(NpcfaceError, ValueError):
    """An input could not be used as an image (unreadable, empty, truncated, too large, bad dtype)."""

    code = "image_error"
    status = 422


class NotStillImageError(ImageError):
    """A video or an animated image given where one still image is required; the message
    names the format and points to ``npcface video`` (:mod:`npcface.video`)."""

    code = "not_still_image"


class VideoError(NpcfaceError):
    """A video file, stream or camera could not be opened or read (no such file, not a
    video, unreachable or lost stream, no camera at that index)."""

    code = "video_error"
    status = 422


class NoFaceError(NpcfaceError):
    """No face was found in an image where one was required."""

    code = "no_face"
    status = 422


class MultipleFacesError(NpcfaceError):
    """Several faces were found where the policy ``single`` required exactly one."""

    code = "multiple_faces"
    status = 422


class LowQualityError(NpcfaceError):
    """A face is too small, blurred or turned to be enrolled; the message says which and the fix.

    Attributes:
        quality: the face's :class:`~npcface.quality.FaceQuality` (``None`` when rebuilt
            from the service's answer).
        gate: the minimum overall quality that was required.
    """

    code = "low_quality"
    status = 422

    def __init__(
        self,
        message: str,
        quality: Any = None,
        gate: float | None = None,
        *,
        input: str | None = None,
    ) -> None:
        super().__init__(message, input=input)
        self.quality = quality
        self.gate = gate


class ModelError(NpcfaceError):
    """A model could not be found, verified (SHA-256) or loaded."""

    code = "model_error"


class UnknownModelError(UnknownNameError, ModelError):
    """No detector or model is registered under that name."""

    code = "unknown_model"


class ProviderError(NpcfaceError):
    """A requested execution provider (GPU, TensorRT) is not available; never silently replaced."""

    code = "provider_error"


class GalleryError(NpcfaceError):
    """A gallery operation failed (missing gallery, wrong dimension, unknown identity)."""

    code = "gallery_error"


class GalleryCorruptError(GalleryError):
    """A gallery's files are corrupt or of an incompatible schema version."""

    code = "gallery_corrupt"
    status = 409


class GalleryNotFoundError(GalleryError):
    """No gallery at that place: never created, deleted, or replaced by another gallery
    since this handle was opened (open it again)."""

    code = "gallery_not_found"
    status = 404


class GalleryExistsError(GalleryError):
    """A gallery exists already where a new one was to be created."""

    code = "gallery_exists"
    status = 409


class GalleryBusyError(GalleryError):
    """The gallery is open for writing elsewhere (another process, or another Gallery object
    in this one); only one writer at a time."""

    code = "gallery_busy"
    status = 409


class GalleryUnavailableError(GalleryError):
    """The gallery's server (Milvus) cannot be reached now: it is down or restarting. Nothing
    is known to have been written by the call that failed; retry later (the connection is
    re-established on its own when the server is back)."""

    code = "gallery_unavailable"
    status = 503


class GalleryClosedError(GalleryError):
    """The Gallery object was closed; open the gallery again."""

    code = "gallery_closed"
    status = 409


class IdentityNotFoundError(GalleryError):
    """The gallery holds no identity of that name (or no template of that id)."""

    code = "identity_not_found"
    status = 404


class GroupNotFoundError(NpcfaceError):
    """A face collection (:class:`npcface.cluster.FaceGroups`) holds no group or face of that
    id (never made, or merged away: a merged group lives on as the group it was merged
    into)."""

    code = "group_not_found"
    status = 404


class MissingExtraError(NpcfaceError, ImportError):
    """An optional dependency is missing; the message names the extra to install.

    Built from its parts (``MissingExtraError(what, extra, module)``) or, as the client
    rebuilds it, from a message alone.
    """

    code = "missing_extra"

    def __init__(
        self,
        what: str,
        extra: str | None = None,
        module: str | None = None,
        *,
        input: str | None = None,
    ) -> None:
        text = (
            what
            if extra is None
            else f"{what} needs the optional dependency '{module}': pip install 'npcface[{extra}]'"
        )
        super().__init__(text, input=input)
        self.extra = extra
        self.module = module


class GalleryArgumentError(GalleryError, InvalidArgumentError):
    """A gallery method got an argument it cannot use (bad name, ``k``, threshold, setting,
    search parameter or path); a :class:`GalleryError` and a ``ValueError`` too."""

    code = "gallery_argument"


class RequestKeyReusedError(GalleryArgumentError):
    """A request key (an ``Idempotency-Key``) was used before for another request."""

    code = "idempotency_key_reused"
    status = 422


class GalleryEmbeddingError(GalleryArgumentError, EmbeddingError):
    """Vectors a gallery cannot store or search: wrong shape or dimension, NaN, all zero."""

    code = "gallery_embedding"


# ---------------------------------------------------------------- the service's own conditions
class ServiceError(NpcfaceError):
    """A condition of the HTTP service itself rather than of the input (auth, routes, time,
    availability); the client raises these when the service answers them or cannot be
    reached."""

    code = "service_error"
    status = 503


class UnauthorizedError(ServiceError):
    """No API key, an unknown one, or an ``Authorization`` scheme other than Bearer."""

    code = "unauthorized"
    status = 401


class ForbiddenError(ServiceError):
    """A read-only API key asked to write."""

    code = "forbidden"
    status = 403


class RouteNotFoundError(ServiceError):
    """No such route in the API."""

    code = "not_found"
    status = 404


class MethodNotAllowedError(ServiceError):
    """The route exists, not with that HTTP method."""

    code = "method_not_allowed"
    status = 405


class RequestTimeoutError(ServiceError):
    """The request took longer than the service's ``--timeout`` (the service wrote nothing),
    or than the client's timeout (it may have been served)."""

    code = "timeout"
    status = 503


class NotReadyError(ServiceError):
    """The service is starting, stopping or cannot be reached."""

    code = "not_ready"
    status = 503


class InternalError(ServiceError):
    """The service failed in a way it does not describe (its log has the details)."""

    code = "internal"
    status = 500
