"""``/v1/streams``: stream monitors: start, list, inspect, stop; their events (recent, and
live as Server-Sent Events) and their annotated preview (a JPEG, or MJPEG)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ...errors import NotReadyError
from .. import deps, schemas
from ..streams import MonitorOptions, StreamManager

router = APIRouter(prefix="/v1/streams", tags=["streams"])

POLL_S = 0.1
KEEPALIVE_S = 15.0


def manager(request: Request) -> StreamManager:
    m = getattr(request.app.state, "streams", None)
    if m is None:  # pragma: no cover - create_app always sets it
        raise NotReadyError("stream monitors are not available")
    return m


@router.post(
    "",
    response_model=None,
    responses={201: {"model": schemas.StreamOut}},
    status_code=201,
    dependencies=[Depends(deps.can_write)],
)
def start(body: schemas.StreamIn, request: Request) -> JSONResponse:
    """Start a monitor; 429 ``too_many_streams`` at the service's limit."""
    if request.app.state.recognizer is None:
        raise NotReadyError("models are still loading")
    if body.gallery is not None:
        request.app.state.galleries.require(body.gallery)
    m = manager(request).start(MonitorOptions(**body.model_dump()))
    return JSONResponse(m.to_dict(), status_code=201)


@router.get(
    "",
    response_model=None,
    responses={200: {"model": schemas.StreamList}},
    dependencies=[Depends(deps.can_read)],
)
def list_streams(request: Request) -> dict[str, Any]:
    """Every monitor and its figures."""
    return {"streams": [m.to_dict() for m in manager(request).list()]}


@router.get(
    "/{monitor_id}",
    response_model=None,
    responses={200: {"model": schemas.StreamOut}},
    dependencies=[Depends(deps.can_read)],
)
def one(monitor_id: str, request: Request) -> dict[str, Any]:
    return manager(request).get(monitor_id).to_dict()


@router.delete(
    "/{monitor_id}",
    response_model=None,
    responses={200: {"model": schemas.StreamOut}},
    dependencies=[Depends(deps.can_write)],
)
def stop(monitor_id: str, request: Request) -> dict[str, Any]:
    """Stop a monitor (its open tracks end) and forget it."""
    return manager(request).stop(monitor_id).to_dict()


@router.get(
    "/{monitor_id}/recent",
    response_model=None,
    responses={200: {"model": schemas.StreamEvents}},
    dependencies=[Depends(deps.can_read)],
)
def recent(monitor_id: str, request: Request, after: int = 0) -> dict[str, Any]:
    """The monitor's kept events numbered above ``after`` (a bounded list)."""
    m = manager(request).get(monitor_id)
    return {"events": m.recent(after), "last": m.seq}


@router.get("/{monitor_id}/events", dependencies=[Depends(deps.can_read)])
async def events(monitor_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events: each event as ``id: N`` / ``event: KIND`` / ``data: JSON``, the
    kept ones first (after ``Last-Event-ID`` when the browser reconnects)."""
    m = manager(request).get(monitor_id)
    after = int(request.headers.get("last-event-id", "0") or 0)

    async def feed() -> AsyncIterator[bytes]:
        nonlocal after
        quiet = 0.0
        yield b"retry: 2000\n\n"
        while True:
            fresh = m.recent(after)
            for e in fresh:
                after = e["seq"]
                yield f"id: {e['seq']}\nevent: {e['event']}\ndata: {json.dumps(e)}\n\n".encode()
            if fresh:
                quiet = 0.0
            if m.state == "stopped" or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
            quiet += POLL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(feed(), media_type="text/event-stream", headers=headers)


@router.get("/{monitor_id}/preview.jpg", dependencies=[Depends(deps.can_read)])
def preview_jpeg(monitor_id: str, request: Request) -> Response:
    """The latest annotated frame (204 before the first)."""
    m = manager(request).get(monitor_id)
    if not m.jpeg:
        return Response(status_code=204)
    return Response(m.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/{monitor_id}/preview.mjpg", dependencies=[Depends(deps.can_read)])
async def preview_mjpeg(monitor_id: str, request: Request) -> StreamingResponse:
    """The annotated frames as MJPEG (``multipart/x-mixed-replace``), for an ``<img>``."""
    m = manager(request).get(monitor_id)

    async def feed() -> AsyncIterator[bytes]:
        seen = 0
        while m.state != "stopped" and not await request.is_disconnected():
            if m.jpeg and m.jpeg_seq != seen:
                seen = m.jpeg_seq
                head = (
                    f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(m.jpeg)}\r\n\r\n"
                )
                yield head.encode() + m.jpeg + b"\r\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        feed(),
        media_type="multipart/x-mixed-replace; boundary=frame",
        headers={"Cache-Control": "no-store"},
    )
