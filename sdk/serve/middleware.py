"""Plain ASGI middleware: request ids, timing and access log, timeouts, and the body limit.

Both wrap the application without buffering it (no ``BaseHTTPMiddleware``), so streaming and
the thread pool behave as without them.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import PayloadTooLargeError, RequestTimeoutError
from ..wire import error_body
from .deadline import Deadline
from .deadline import current as deadline_var

log = logging.getLogger("npcface.serve.access")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The id of the request being served (``-`` outside requests); in every log record through
:class:`RequestIdFilter`."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (use ``%(request_id)s`` in a log format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def setup_logging(level: int) -> None:
    """Log to stderr at ``level`` with the request id in every line (the CLI's choice; the
    app itself never configures logging)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    for handler in root.handlers:
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(fmt)


async def send_json(send: Send, status: int, body: dict[str, Any], rid: str | None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if rid:
        headers.append((b"x-request-id", rid.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class RequestFrame:
    """Gives each HTTP request an id (``X-Request-ID``, taken from the request if it has a
    sane one), times it (``Server-Timing: app;dur=MS``, the time to the response's start),
    logs one access line, records metrics, and answers 503 ``timeout`` when the
    application has not started its response within ``timeout_s`` and has not begun to
    commit a write (:mod:`npcface.serve.deadline`): a 503 ``timeout`` never hides a write.

    Args:
        app: the ASGI application.
        timeout_s: request timeout in seconds.
        observe: ``observe(route, method, status, seconds)`` for metrics.
    """

    def __init__(
        self,
        app: App,
        timeout_s: float,
        observe: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        deadline = Deadline(self.timeout_s)
        deadline_token = deadline_var.set(deadline)
        t0 = time.perf_counter()
        state = {"started": False, "status": 500, "abandoned": False}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if state["abandoned"]:
                return  # the timeout answer went out already
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = int(message["status"])
                took = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}".encode()
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"x-request-id", rid.encode()),
                        (b"server-timing", took),
                    ],
                }
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_wrapper))
        try:
            try:
                done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
            except asyncio.CancelledError:  # the client went away: so does the request
                task.cancel()
                task.add_done_callback(_quiet)
                raise
            if task in done:
                task.result()
            elif not deadline.expire():  # a write is committing: its answer is the truth
                await task
            else:
                state["abandoned"] = True
                task.cancel()
                task.add_done_callback(_quiet)
                if not state["started"]:
                    exc = RequestTimeoutError(
                        f"request took longer than {self.timeout_s:g} s and wrote nothing; "
                        "retry later or send fewer or smaller images",
                    )
                    status, body = error_body(exc)
                    state["status"] = status
                    await send_json(send, status, body, rid)
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            if self.observe is not None:
                self.observe(path, scope["method"], int(state["status"]), seconds)
            log.info(
                "%s %s %s %d %.1f ms",
                rid,
                scope["method"],
                scope["path"],
                state["status"],
                seconds * 1e3,
            )
            deadline_var.reset(deadline_token)
            request_id.reset(token)


def _quiet(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not warn


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
                return text
    return None


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 ``payload_too_large``: at once from
    ``Content-Length``, or while reading a chunked body (the read raises, the exception
    handler answers)."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body exceeds the limit of {self.max_bytes:,} bytes; send fewer or "
            "smaller images (the server's --max-body-mb)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    status, body = error_body(self._error())
                    await send_json(send, status, body, request_id.get())
                    return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited, send)
