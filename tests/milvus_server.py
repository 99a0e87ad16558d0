"""A real Milvus standalone server for tests and benches: ``milvus-server`` of the PyPI
package ``milvus`` (Milvus 2.3 with embedded etcd and message queue), started on free
loopback ports in a folder of its own, stopped (and killable) on demand.

One at a time per machine: the embedded etcd always takes peer port 2380 (the package's
configuration has no setting for it), and a second server's etcd fails to start (Milvus
then panics in ``GetEmbedEtcdClient``). A server holds a machine-wide lock from start to
stop; the next one waits for it."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PORTS = (
    "etcd-port",
    "root-coord-port",
    "proxy-port",
    "proxy-internal-port",
    "query-coord-port",
    "query-node-port",
    "index-coord-port",
    "index-node-port",
    "data-coord-port",
    "data-node-port",
)


def why_not() -> str | None:
    """Why no server can be started here (None when it can)."""
    if importlib.util.find_spec("milvus") is None or shutil.which("milvus-server") is None:
        return "the Milvus server is not installed: pip install milvus (CI installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusServer:
    """``milvus-server`` with its data in ``folder``; :attr:`address` is ``host:port``."""

    def __init__(
        self,
        folder: Path,
        start_timeout_s: float = 240.0,
        config: dict[str, str | int] | None = None,
    ) -> None:
        """``config``: settings of Milvus's ``milvus.yaml`` by dotted key (``--extra-config``),
        e.g. ``{"dataCoord.gc.interval": 5}``."""
        self.folder = Path(folder)
        self.config = dict(config or {})
        self.ports = {name: _free_port() for name in PORTS}
        self.address = f"127.0.0.1:{self.ports['proxy-port']}"
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    def _take_machine_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open("/tmp/npcface-milvus-server.lock", os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(
                        "another milvus-server runs on this machine (its embedded etcd holds "
                        "port 2380); only one can"
                    ) from None
                time.sleep(1)
        self._lock = fd

    def _release_machine_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def start(self) -> MilvusServer:
        self._take_machine_lock()
        cmd = ["milvus-server", "--data", str(self.folder / "data")]
        for name, port in self.ports.items():
            cmd += [f"--{name}", str(port)]
        for key, value in self.config.items():
            cmd += ["--extra-config", f"{key}={value}"]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        # a session of its own: the launcher starts the milvus binary as its child, and a
        # kill must take both
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                self._release_machine_lock()
                raise RuntimeError(f"milvus-server did not start; see {self.folder / 'server.log'}")
            time.sleep(0.5)
        return self

    def _answers(self) -> bool:
        from pymilvus import MilvusClient

        try:
            with socket.create_connection(("127.0.0.1", self.ports["proxy-port"]), timeout=1):
                pass
            client = MilvusClient(uri=f"http://{self.address}", timeout=5)
            client.list_collections()
            client.close()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the launcher and the server, as a crash (the data folder stays)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
            self.kill()  # whatever of the group is left
        self._release_machine_lock()

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
