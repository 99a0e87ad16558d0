"""Operations: ``/healthz``, ``/readyz``, ``/metrics`` and the page at ``/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process answers (liveness); ``pid`` tells which worker process did."""
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """200 once the models are loaded and the gallery root is usable, else 503."""
    state = request.app.state
    rec = getattr(state, "recognizer", None)
    problems = []
    if rec is None:
        problems.append("models not loaded")
    try:
        names = state.galleries.names()
    except OSError as exc:
        names = []
        problems.append(f"gallery root unusable: {exc}")
    body: dict[str, Any] = {
        "ready": not problems,
        "model": rec.info.name if rec is not None else None,
        "galleries": len(names),
        "galleries_open": state.galleries.open_count(),
    }
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status_code=200 if not problems else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus metrics of this worker."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The demo page: verify two photos, identify one against a gallery."""
    return FileResponse(STATIC / "index.html")
