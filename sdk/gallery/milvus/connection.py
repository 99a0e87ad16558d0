"""Connections to Milvus: a server by address, or Milvus Lite's embedded server for a local
file, started with the first gallery of that file in this process and stopped with its
last."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import (
    GalleryError,
    GalleryUnavailableError,
    MissingExtraError,
)
from ..uri import MILVUS_LITE, TOKEN_ENV, GalleryLocation

log = logging.getLogger(__name__)


CONNECT_TIMEOUT = 60.0
"""Seconds to wait for Milvus to answer the first call (pymilvus's default, 10 s, was not
always enough for an embedded Milvus Lite on a busy 2-core machine)."""


def _connect(loc: GalleryLocation) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MissingExtraError("Milvus galleries", "milvus", "pymilvus") from None
    if loc.kind == MILVUS_LITE:
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise MissingExtraError("Milvus Lite galleries", "milvus", "milvus-lite") from None
        Path(str(loc.path)).parent.mkdir(parents=True, exist_ok=True)
        _quiet_lite_server()
        with _LITE_LOCK:
            key = str(Path(str(loc.path)).resolve())
            _LITE_OPEN[key] = _LITE_OPEN.get(key, 0) + 1
    # dedicated: a channel of its own (pymilvus >= 3 shares one per address by default, and
    # an idle shared channel to Milvus Lite was closed by its server, "too many pings",
    # failing the next gallery opened in the process)
    kwargs: dict[str, Any] = {"timeout": CONNECT_TIMEOUT, "dedicated": True}
    if loc.kind == MILVUS_LITE:
        # no keep-alive pings to the embedded server: during a long call (an HNSW build takes
        # minutes) pymilvus's pings every 10 s made it answer GOAWAY "too_many_pings", and
        # pymilvus's retry of create_index then failed with "index already exists"
        kwargs["grpc_options"] = {
            "grpc.keepalive_time_ms": 2**31 - 1,
            "grpc.keepalive_permit_without_calls": 0,
        }
    token = os.environ.get(TOKEN_ENV)
    if token and loc.kind != MILVUS_LITE:
        kwargs["token"] = token
    try:
        return MilvusClient(loc.client_uri, **kwargs)
    except Exception as exc:
        if loc.kind == MILVUS_LITE:
            _release_lite(Path(str(loc.path)))
            raise GalleryError(
                f"{loc.uri}: cannot open the Milvus Lite file (another process may have it "
                f"open: Milvus Lite allows one process per file): {exc}"
            ) from exc
        if _is_unavailable(exc):
            raise GalleryUnavailableError(
                f"{loc.uri}: the Milvus server cannot be reached (down or restarting); "
                f"retry later ({exc})"
            ) from exc
        raise GalleryError(f"{loc.uri}: cannot connect to Milvus: {exc}") from exc


def _disconnect(loc: GalleryLocation, client: Any) -> None:
    try:
        client.close()
    finally:
        if loc.kind == MILVUS_LITE:
            _release_lite(Path(str(loc.path)))


class _UnimplementedCallNoise(logging.Filter):
    """Milvus Lite's embedded gRPC server does not implement every call pymilvus makes
    (``AllocTimestamp`` when a collection is created); gRPC then logs an ERROR with a
    traceback per call (3 for one ``gallery create``), though pymilvus carries on and the
    gallery works. Such records go to this module's log at DEBUG instead; every other
    record of ``grpc._server`` passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, NotImplementedError) and "Method not implemented" in str(exc):
            method = record.exc_info[2]  # the servicer frame names the call
            while method is not None and method.tb_next is not None:
                method = method.tb_next
            name = method.tb_frame.f_code.co_name if method is not None else "?"
            log.debug("Milvus Lite does not implement %s (pymilvus goes on without it)", name)
            return False
        return True


_LITE_NOISE = _UnimplementedCallNoise()


def _quiet_lite_server() -> None:
    """Keep Milvus Lite's harmless "Method not implemented!" tracebacks off the terminal
    (see :class:`_UnimplementedCallNoise`); once per process."""
    grpc_server_log = logging.getLogger("grpc._server")
    if _LITE_NOISE not in grpc_server_log.filters:
        grpc_server_log.addFilter(_LITE_NOISE)


_LITE_LOCK = threading.Lock()

_LITE_OPEN: dict[str, int] = {}
"""Open galleries per Milvus Lite file in this process: the embedded server (and its file
lock) is stopped when the last one closes, so another process can open the file."""


def _release_lite(path: Path) -> None:
    key = str(path.resolve())
    with _LITE_LOCK:
        left = _LITE_OPEN.get(key, 0) - 1
        if left > 0:
            _LITE_OPEN[key] = left
            return
        _LITE_OPEN.pop(key, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - older milvus-lite: the server lives until exit
        return
    server_manager_instance.release_server(str(path))


def _check_consistency(level: str) -> None:
    if level not in ("Strong", "Bounded", "Session", "Eventually"):
        raise GalleryError(
            f"consistency must be Strong, Bounded, Session or Eventually, not {level!r}"
        )


class GuardedClient:
    """A ``MilvusClient`` whose calls fail with npcface's errors when the server is away.

    * The server cannot be reached (down, restarting, a dropped connection that pymilvus
      could not re-establish): :class:`~npcface.errors.GalleryUnavailableError`. pymilvus
      re-creates the channel at the next call, so the same gallery object works again once
      the server is back; nothing has to be reopened.
    * After a restart, Milvus 2.3 answers "collection not loaded" until it has loaded the
      collections again in the background; the gallery's collections are then loaded again
      here and the call is repeated once (the refused call did nothing).

    Every other error passes unchanged. Attributes that are not calls are passed through.
    """

    def __init__(self, client: Any, uri: str, collections: Sequence[str]) -> None:
        self._client = client
        self._uri = uri
        self._collections = tuple(collections)

    @property
    def raw(self) -> Any:
        """The ``MilvusClient`` itself."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return self._translated(attr, args, kwargs)
            except _NotLoaded:
                for coll in self._collections:
                    self._translated(self._client.load_collection, (coll,), {})
                return self._translated(attr, args, kwargs)

        return call

    def _translated(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            return fn(*args, **kwargs)
        except GalleryError:
            raise
        except Exception as exc:
            if _is_unavailable(exc):
                raise GalleryUnavailableError(
                    f"{self._uri}: the Milvus server cannot be reached (down or restarting); "
                    "retry later"
                ) from exc
            if _is_not_loaded(exc):
                raise _NotLoaded from exc
            raise


class _NotLoaded(Exception):
    """Internal: the server answered "collection not loaded"."""


def _is_unavailable(exc: BaseException) -> bool:
    """pymilvus's ways of saying that the server is not there: ``CONNECT_FAILED`` (code 2),
    ``MilvusUnavailableException``, or gRPC's ``UNAVAILABLE`` raised as is."""
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    if isinstance(exc, MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        return exc.code == 2  # pymilvus.client.types.Status.CONNECT_FAILED
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpcio
        return False
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


def _is_not_loaded(exc: BaseException) -> bool:
    from pymilvus.exceptions import MilvusException

    # Milvus 2.3's only sign is its message (code 101, "collection not loaded")
    return isinstance(exc, MilvusException) and "collection not loaded" in str(exc.message)
