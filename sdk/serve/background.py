"""Run the service on a free loopback port for tests, benchmarks and notebooks: in a
background thread of this process (:class:`BackgroundServer`), or as ``npcface serve``
itself in a child process (:class:`ServeProcess`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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

        self.app = app
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


class ServeProcess:
    """``npcface serve`` for real, as a child process on a free loopback port, with all its
    workers answering (tests, benchmarks, soak runs).

    Use as a context manager (stops it with SIGTERM, then SIGKILL); :meth:`start` again
    after a stop or a kill runs it anew on the same port.

    Args:
        args: more ``npcface serve`` options (``--workers 2``, ``--gallery-root DIR``...).
        log: file that receives the server's output (default: discarded).
        start_timeout_s: how long to wait for every worker to answer.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        log: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.workers = (
            int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1
        )
        self.log = log
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: set[int] = set()

    def start(self) -> ServeProcess:
        """Start it and wait until every worker has answered ``/healthz``.

        Raises:
            RuntimeError: it exited, or did not answer in time (the log says why).
        """
        cmd = [sys.executable, "-m", "npcface.cli", "serve", "--port", str(self.port), *self.args]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + self.start_timeout_s
        self.worker_pids = set()
        import httpx

        while len(self.worker_pids) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"npcface serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"npcface serve: {len(self.worker_pids)} worker(s) answered")
            try:
                with httpx.Client(timeout=5) as h:  # a fresh connection: any worker may take it
                    if h.get(f"{self.url}/readyz").status_code == 200:
                        self.worker_pids.add(int(h.get(f"{self.url}/healthz").json()["pid"]))
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (it drains its requests), then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
