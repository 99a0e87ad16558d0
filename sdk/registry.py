"""The one name -> object registry (timm style): detectors, recognisers and other models,
backbones, heads and data sets all use it.

Names and aliases are case-insensitive; registering a name twice is refused (never a silent
replacement); an unknown name raises an error that lists the valid ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import InvalidArgumentError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps case-insensitive names (and aliases) to objects (factories, specs).

    Args:
        kind: what is registered ("detector", "head", ...), used in error messages.
        error: the :class:`~npcface.errors.UnknownNameError` subclass raised for an unknown name.
    """

    def __init__(self, kind: str, error: type[UnknownNameError] = UnknownNameError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def add(self, name: str, item: T, *aliases: str) -> T:
        """Register ``item`` under ``name`` and ``aliases``.

        Raises:
            InvalidArgumentError: a name or alias is already taken.
        """
        keys = [k.lower() for k in (name, *aliases)]
        taken = [k for k in keys if k in self._entries]
        if taken or len(set(keys)) != len(keys):
            raise InvalidArgumentError(
                f"{self.kind} {', '.join(repr(k) for k in taken or keys)} is already registered"
            )
        for key in keys:
            self._entries[key] = item
            self._canonical[key] = name.lower()
        return item

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering a factory under ``name`` and ``aliases``."""

        def deco(item: T) -> T:
            return self.add(name, item, *aliases)

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or an alias of it).

        Raises:
            UnknownNameError: no such name (or not a string); the message lists valid names.
        """
        try:
            return self._entries[name.lower()]
        except (KeyError, AttributeError):
            raise self.error(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None

    def canonical(self, name: str) -> str:
        """The name an alias stands for (``get`` rules and errors)."""
        self.get(name)
        return self._canonical[name.lower()]

    def names(self, pattern: str = "*", aliases: bool = True) -> list[str]:
        """Registered names matching a glob ``pattern``, sorted; ``aliases=False`` lists each
        entry once, by its canonical name."""
        keys = self._entries if aliases else set(self._canonical.values())
        return sorted(k for k in keys if fnmatch.fnmatch(k, pattern.lower()))

    def items(self) -> Iterator[tuple[str, T]]:
        """(canonical name, object) for each entry."""
        for name in self.names(aliases=False):
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries
