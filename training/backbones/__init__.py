"""Face embedding backbones: image batch (N, 3, S, S) -> embedding (N, D), not normalised.

:func:`get_backbone` builds one by name for an input size (120, as in the NPCFace paper, by
default; 112 for the ArcFace convention) and an embedding size (512). :func:`list_backbones`
lists the names. Every backbone exposes ``input_size`` and ``embedding_size`` attributes.
"""

from __future__ import annotations

from torch import nn

from npcface.registry import Registry

__all__ = ["BACKBONES", "get_backbone", "list_backbones", "register_backbone"]

BACKBONES: Registry = Registry("backbone")


def register_backbone(name: str, *aliases: str):
    """Decorator adding a factory ``f(input_size, embedding_size, **kw) -> nn.Module``."""
    return BACKBONES.register(name, *aliases)


def get_backbone(
    name: str, input_size: int = 120, embedding_size: int = 512, **kwargs
) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: a name from :func:`list_backbones` (case-insensitive).
        input_size: side S of the square aligned crop (120 paper default, or 112).
        embedding_size: length D of the embedding (512 in the paper).
        **kwargs: architecture options of that backbone (e.g. ``width`` for MobileFaceNet).

    Raises:
        UnknownNameError: unknown ``name``; the message lists the valid ones.
        ValueError: an input size too small for the architecture's strides.
    """
    return BACKBONES.get(name)(input_size=input_size, embedding_size=embedding_size, **kwargs)


def list_backbones() -> list[str]:
    """Registered backbone names and aliases, sorted."""
    return BACKBONES.names()


def _spatial_after(size: int, n_stride2: int) -> int:
    """Feature-map side after ``n_stride2`` stride-2 3x3 convolutions with padding 1."""
    for _ in range(n_stride2):
        size = (size - 1) // 2 + 1
    return size


# register the architectures (import for side effects)
from . import iresnet, mobilefacenet  # noqa: E402,F401
