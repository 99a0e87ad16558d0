"""Run the service in a background thread on a free loopback port (tests, benchmarks,
notebooks). ``npcface serve`` is the way to run it for real."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class BackgroundServer:
    """A real uvicorn server for ``app`` on ``127.0.0.1`` in a daemon thread.

    Use as a context manager; ``url`` is its base URL once entered.

    Args:
        app: an ASGI application (e.g. from :func:`npcface.serve.create_app`).
        start_timeout_s: how long to wait for the app's startup (models load then).
    """

    def __init__(self, app: Any, start_timeout_s: float = 120.0) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        from .cli import KEEP_ALIVE_S

        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self.start_timeout_s = start_timeout_s

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log)")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
