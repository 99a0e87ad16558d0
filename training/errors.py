"""Errors of the training companion, under the SDK's :class:`~npcface.errors.NpcfaceError` root."""

from __future__ import annotations

from npcface.errors import NpcfaceError, UnknownNameError

__all__ = ["ConfigError", "DataError", "TrainingError", "UnknownNameError"]


class TrainingError(NpcfaceError):
    """Root of the errors raised by :mod:`npcface.training`."""


class ConfigError(TrainingError, ValueError):
    """A training config is invalid (unknown key, wrong type, impossible value)."""


class DataError(TrainingError, ValueError):
    """A training data set is missing, empty or malformed."""
