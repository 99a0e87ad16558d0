"""Face detectors: a registry of names to constructors, and the :class:`Detector` protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ModelError
from .base import Detector, nms

_DETECTORS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    def wrap(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        _DETECTORS[name] = factory
        return factory

    return wrap


@register_detector("yunet")
def _yunet(**kwargs: Any) -> Detector:
    from .yunet import YuNetDetector

    return YuNetDetector(**kwargs)


@register_detector("retinaface")
def _retinaface(**kwargs: Any) -> Detector:
    from .retinaface import RetinaFaceDetector

    return RetinaFaceDetector(**kwargs)


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def get_detector(name: str = "yunet", **kwargs: Any) -> Detector:
    """Build a detector by registry name (``yunet``, ``retinaface``) with its options.

    An object that already has a ``detect`` method is returned unchanged.
    """
    if not isinstance(name, str):
        if isinstance(name, Detector):
            return name
        raise ModelError(f"a detector must be a name or have .detect(); got {type(name).__name__}")
    try:
        factory = _DETECTORS[name]
    except KeyError:
        raise ModelError(
            f"unknown detector {name!r}; available: {', '.join(list_detectors())}"
        ) from None
    return factory(**kwargs)


__all__ = ["Detector", "get_detector", "list_detectors", "nms", "register_detector"]
