"""A tiny name -> factory registry (timm style) used for heads, backbones and data sets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps case-insensitive names (and aliases) to factories.

    Args:
        kind: what is registered ("head", "backbone"...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering a factory under ``name`` and ``aliases``."""

        def deco(factory: T) -> T:
            for key in (name, *aliases):
                key = key.lower()
                if key in self._entries:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._entries[key] = factory
            return factory

        return deco

    def get(self, name: str) -> T:
        """The factory registered as ``name``.

        Raises:
            UnknownNameError: no such name; the message lists the valid ones.
        """
        try:
            return self._entries[name.lower()]
        except (KeyError, AttributeError):
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names and aliases, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries
