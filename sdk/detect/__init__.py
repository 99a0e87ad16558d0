"""Face detectors: a registry of names to constructors, and the :class:`Detector` protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgumentError, UnknownModelError
from ..registry import Registry
from .base import Detector, nms

DETECTORS: Registry[Callable[..., Detector]] = Registry("detector", UnknownModelError)


def register_detector(
    name: str, *aliases: str
) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator registering a detector factory under ``name`` (and ``aliases``)."""
    return DETECTORS.register(name, *aliases)


@register_detector("yunet")
def _yunet(**kwargs: Any) -> Detector:
    from .yunet import YuNetDetector

    return YuNetDetector(**kwargs)


@register_detector("retinaface", "retinaface-mnet025")
def _retinaface(**kwargs: Any) -> Detector:
    from .retinaface import RetinaFaceDetector

    return RetinaFaceDetector(**kwargs)


def list_detectors() -> list[str]:
    """Registered detector names (and aliases), sorted."""
    return DETECTORS.names()


def get_detector(name: str = "yunet", **kwargs: Any) -> Detector:
    """Build a detector by registry name (``yunet``, ``retinaface``) with its options.

    An object that already has a ``detect`` method is returned unchanged.
    """
    if not isinstance(name, str):
        if isinstance(name, Detector):
            return name
        raise InvalidArgumentError(
            f"a detector must be a name or have .detect(); got {type(name).__name__}"
        )
    return DETECTORS.get(name)(**kwargs)


__all__ = ["Detector", "get_detector", "list_detectors", "nms", "register_detector"]
