"""A real Milvus standalone server for tests and benches: ``milvus-server`` of the PyPI
package ``milvus`` (Milvus 2.3 with embedded etcd and message queue), started on free
loopback ports in a folder of its own, stopped (and killable) on demand.

Several can run on one machine: the embedded etcd would take peer port 2380 whatever the
package's flags say (a second server's etcd then fails and Milvus panics in
``GetEmbedEtcdClient``), so each server gets an etcd configuration of its own with free
loopback ports, passed as Milvus's ``ETCD_CONFIG_PATH`` (the environment form of
``etcd.config.path``, which the package's ``milvus.yaml`` template lacks)."""

from __future__ import annotations

import contextlib
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
        self.etcd_peer_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _etcd_config(self) -> Path:
        """The embedded etcd's own configuration: this server's data folder and loopback
        ports (the same ones on every start, as etcd keeps its member's peer address)."""
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.ports['etcd-port']}"
        path = self.folder / "embedEtcd.yaml"
        path.write_text(
            "name: default\n"
            f"data-dir: {self.folder / 'data' / 'data' / 'etcd.data'}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
        )
        return path

    def start(self) -> MilvusServer:
        cmd = ["milvus-server", "--data", str(self.folder / "data")]
        for name, port in self.ports.items():
            cmd += [f"--{name}", str(port)]
        for key, value in self.config.items():
            cmd += ["--extra-config", f"{key}={value}"]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        # a session of its own: the launcher starts the milvus binary as its child, and a
        # kill must take both
        env = dict(os.environ, ETCD_CONFIG_PATH=str(self._etcd_config()))
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
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

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
