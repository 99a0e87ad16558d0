"""The application factory :func:`create_app`; :func:`app_from_env` for uvicorn workers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import RecognizerConfig
from ..errors import (
    InvalidArgumentError,
    MethodNotAllowedError,
    NpcfaceError,
    RouteNotFoundError,
)
from ..wire import error_body
from .auth import KeyRing
from .docs_assets import add_docs
from .galleries import GalleryManager
from .metrics import Metrics
from .middleware import BodyLimit, RequestFrame, request_id, setup_logging
from .routes import faces, galleries, groups, identities, ops, streams, verification
from .settings import Settings
from .streams import StreamManager

log = logging.getLogger(__name__)

SETTINGS_ENV = "NPCFACE_SERVE_SETTINGS"
MASTER_ENV = "NPCFACE_SERVE_MASTER"
"""The pid of ``npcface serve``'s master process, for its workers (:func:`die_with`)."""
SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval of ``npcface serve``'s processes (Python's default: 5 ms)."""


def create_app(settings: Settings | None = None, recognizer: Any = None) -> FastAPI:
    """Build the service.

    Args:
        settings: how to run (default :class:`Settings`).
        recognizer: a :class:`~npcface.FaceRecognizer` to serve instead of building one
            from ``settings`` (it must be safe to share between threads).

    Returns:
        The FastAPI application; models load when it starts (its lifespan), not here.

    Raises:
        InvalidArgumentError: the API key file is unreadable or malformed.
    """
    settings = settings or Settings()
    keys = KeyRing.load(settings.api_key_file)
    manager = GalleryManager(
        settings.gallery_root,
        keep_writer=settings.workers <= 1,
        writer_wait_s=settings.writer_wait_s,
        writer_idle_s=settings.writer_idle_s,
    )
    metrics = Metrics(manager.sizes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recognizer if recognizer is not None else settings.build_recognizer()
        await run_in_threadpool(_warm_up, rec)
        app.state.recognizer = rec
        upkeep = None
        if not manager.keep_writer:  # several workers: writer locks go back when idle
            upkeep = asyncio.create_task(_upkeep(manager, settings.writer_idle_s))
        log.info("serving %s; galleries in %s", rec.info.name, manager.root)
        try:
            yield
        finally:
            if upkeep is not None:
                upkeep.cancel()
            await run_in_threadpool(app.state.streams.close)
            app.state.recognizer = None
            await run_in_threadpool(manager.close)

    app = FastAPI(
        title="npcface",
        version=__version__,
        summary="Face detection, verification and identification with galleries",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    app.state.settings = settings
    app.state.keys = keys
    app.state.galleries = manager
    app.state.metrics = metrics
    app.state.recognizer = None
    app.state.streams = StreamManager(
        lambda: app.state.recognizer, manager.root, limit=settings.max_streams
    )
    for router in (
        faces.router,
        verification.router,
        galleries.router,
        identities.router,
        ops.router,
        streams.router,
        groups.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=ops.STATIC), name="static")
    _add_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestFrame, timeout_s=settings.request_timeout_s, observe=metrics.observe)
    return app


def _warm_up(rec: Any) -> None:
    """Load the models now (and run them once) so the first request is not the slow one."""
    info = rec.info
    rec.detect(np.zeros((64, 64, 3), np.uint8))
    rec.embed(np.zeros((info.input_size, info.input_size, 3), np.uint8))


async def _upkeep(manager: GalleryManager, every_s: float) -> None:
    while True:
        await asyncio.sleep(max(every_s / 2, 0.1))
        try:
            await run_in_threadpool(manager.release_idle)
        except Exception:  # noqa: BLE001 - upkeep must go on
            log.exception("giving back idle writer locks failed")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NpcfaceError)
    async def npcface_error(request: Request, exc: NpcfaceError) -> JSONResponse:
        status, body = error_body(exc)
        body["message"] = _without_paths(body["message"], request.app.state.galleries.root)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}")
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        body = {
            "error": "invalid_argument",
            "message": "; ".join(parts) or "invalid request",
            "input": ".".join(str(p) for p in first if p != "body") or None,
        }
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = {404: RouteNotFoundError, 405: MethodNotAllowedError}.get(
            exc.status_code, InvalidArgumentError
        )
        body = error_body(cls(str(exc.detail)))[1]
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # logged with its traceback here; the client gets no details of it
        log.error("request %s failed", request_id.get(), exc_info=exc)
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)


def _without_paths(message: str, root: Path) -> str:
    """A message with the server's gallery paths replaced by the gallery's name (library
    errors name the files they are about; a client has no business with them)."""
    for prefix in {str(root.resolve()), str(root.absolute()), str(root)}:
        message = re.sub(
            rf"{re.escape(prefix.rstrip('/'))}/([^/\s:'\"]+)(/[^\s:'\"]*)?",
            lambda m: f"gallery {m.group(1)!r}",
            message,
        )
    return message


# ------------------------------------------------------------------ settings via environment
def settings_to_env(settings: Settings) -> str:
    """Settings as JSON for :data:`SETTINGS_ENV` (worker processes rebuild them from it)."""
    d = {f.name: getattr(settings, f.name) for f in fields(Settings)}
    d.pop("recognizer_factory", None)
    d["pipeline"] = settings.pipeline.to_dict()
    for k, v in d.items():
        if isinstance(v, Path):
            d[k] = str(v)
    return json.dumps(d)


def die_with(master: int) -> None:
    """End this worker process (SIGTERM: it drains its requests) when ``master`` dies, even
    by SIGKILL: orphaned workers would go on serving with the master's socket, and a restart
    would find the address in use. Linux: the kernel's parent-death signal; elsewhere a
    thread that watches the parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
            if os.getppid() != master:  # it died before the signal was asked for
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:
        while os.getppid() == master:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="npcface-master-watch", daemon=True).start()


def app_from_env() -> FastAPI:
    """The app described by :data:`SETTINGS_ENV` (uvicorn's ``--factory`` entry point)."""
    level = os.environ.get("NPCFACE_SERVE_LOG_LEVEL")
    if level is not None:  # a worker process of `npcface serve`: the process is ours
        setup_logging(int(level))
        master = os.environ.get(MASTER_ENV)
        if master and int(master) != os.getpid():
            die_with(int(master))
        # Inference threads hold the GIL in their Python parts; the event loop, which needs
        # it for every small step of every request, waited up to the default 5 ms each time
        # and fell behind under concurrency. bench/serve_load.py, verify at concurrency 4,
        # service/library throughput: 0.62 with 5 ms, 0.90 with 0.5 ms (2 loaded cores).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    raw = json.loads(os.environ.get(SETTINGS_ENV, "{}"))
    known = {f.name for f in fields(Settings)} - {"recognizer_factory"}
    kwargs = {k: v for k, v in raw.items() if k in known}
    for key in ("gallery_root", "api_key_file"):
        if kwargs.get(key) is not None:
            kwargs[key] = Path(kwargs[key])
    if "cors_origins" in kwargs:
        kwargs["cors_origins"] = tuple(kwargs["cors_origins"])
    if "pipeline" in kwargs:
        kwargs["pipeline"] = RecognizerConfig.from_dict(kwargs["pipeline"])
    return create_app(Settings(**kwargs))
