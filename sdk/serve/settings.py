"""The service's settings: one frozen dataclass, filled by ``npcface serve``'s options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RecognizerConfig


@dataclass(frozen=True)
class Settings:
    """How the service runs.

    Attributes:
        gallery_root: directory holding the galleries, one sub-directory per name
            (created if missing).
        api_key_file: file of hashed API keys (see :mod:`npcface.serve.auth`); ``None``
            serves without authentication (fine on loopback).
        pipeline: the recogniser's :class:`~npcface.config.RecognizerConfig` (the same
            value every other command builds its recogniser from; its ``max_pixels`` is
            the largest image accepted, checked from the header before decoding).
        max_body_bytes: largest request body (413 beyond it).
        max_images: most images (or embeddings) in one request (400 beyond it).
        request_timeout_s: a request still running after this many seconds gets 503
            ``timeout`` (the work it started finishes in the background).
        max_k: largest ``k`` for identify and search.
        workers: uvicorn worker processes; with more than one, a worker holds a gallery's
            writer lock only while it writes (released after ``writer_idle_s``).
        writer_wait_s: how long a write waits for another worker's writer lock (409 after).
        writer_idle_s: idle time after which a worker gives a gallery's writer lock back
            (only when ``workers > 1``).
        cors_origins: origins allowed by CORS; empty (the default) adds no CORS headers.
        max_streams: most stream monitors running at once (``/v1/streams``; 429
            ``too_many_streams`` beyond it).
        recognizer_factory: builds the recogniser instead of the pipeline options (for
            embedding the app in a process that already has one).
    """

    gallery_root: Path = Path("galleries")
    api_key_file: Path | None = None
    pipeline: RecognizerConfig = field(default_factory=RecognizerConfig)
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 32
    request_timeout_s: float = 60.0
    max_k: int = 1000
    workers: int = 1
    writer_wait_s: float = 10.0
    writer_idle_s: float = 2.0
    cors_origins: tuple[str, ...] = field(default=())
    max_streams: int = 4
    recognizer_factory: Callable[[], Any] | None = field(default=None, compare=False)

    def build_recognizer(self) -> Any:
        """The :class:`~npcface.FaceRecognizer` these settings describe (not loaded yet)."""
        if self.recognizer_factory is not None:
            return self.recognizer_factory()
        from ..recognizer import FaceRecognizer

        return FaceRecognizer.from_config(self.pipeline)
