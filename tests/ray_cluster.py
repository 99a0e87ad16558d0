"""A real two-node Ray cluster on one machine for tests: a head and a second node started
with ``ray start --block`` on free loopback ports, each in a process group of its own (so
that one node can be killed as a crash, and stopping the cluster touches no other Ray on the
machine).

Both nodes run this Python (so their workers import this npcface), use a temporary folder of
their own (a plain ``ray.init()`` elsewhere on the machine does not find this cluster), and
token authentication with a token made for the cluster (a token file left in ``~/.ray`` by
another Ray does not get in the way): :attr:`env` is the environment a client needs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_MAIN = "from ray.scripts.scripts import main; main()"


def why_not() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed: pip install 'npcface[ray]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A head and ``workers`` more nodes, ``cpus`` CPUs each; :attr:`address` is
    ``127.0.0.1:PORT`` (what ``--address`` takes)."""

    def __init__(self, log_dir: Path, workers: int = 1, cpus: int = 1, timeout_s: float = 300):
        self.log_dir = Path(log_dir)
        self.workers = workers
        self.cpus = cpus
        self.timeout_s = timeout_s
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's Unix sockets live in the temporary folder: keep its path short
        self.temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = {
            **clean,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # a busy 2-core machine needs more than Ray's 30 s to start a node
            "RAY_gcs_server_port_wait_time_s": "180",
            "RAY_raylet_start_wait_time_s": "180",
        }
        self.nodes: list[subprocess.Popen[bytes]] = []

    def _node(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        cmd = [sys.executable, "-c", RAY_MAIN, "start", "--block", "--disable-usage-stats"]
        cmd += ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), *args]
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        return proc

    def start(self) -> RayCluster:
        head = ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        self.nodes.append(self._node([*head, "--temp-dir", self.temp_dir], "head"))
        self.wait_for_nodes(1)
        for i in range(self.workers):
            self.nodes.append(self._node(["--address", self.address], f"node{i + 1}"))
        self.wait_for_nodes(1 + self.workers)
        return self

    def _ask(self, expression: str) -> object:
        """The JSON value of ``expression`` evaluated by a driver of its own connected to the
        cluster (``ray`` imported), or None when it could not connect."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
            f"print(json.dumps({expression}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
            timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])

    def alive_nodes(self) -> list[dict]:
        """The live nodes: ``[{"id": ..., "cpus": ...}]``."""
        nodes = self._ask(
            "[{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0)} "
            "for n in ray.nodes() if n['Alive']]"
        )
        return list(nodes or [])

    def driver_pids(self) -> set[int]:
        """Process ids of every driver (job) that has connected to the cluster."""
        pids = self._ask("[int(j['DriverPid']) for j in ray._private.state.jobs()]")
        return set(pids or [])

    def wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while len(self.alive_nodes()) < n:
            dead = [p for p in self.nodes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray cluster did not start; see {self.log_dir}/*.log")
            time.sleep(1)

    def kill_node(self, i: int) -> None:
        """SIGKILL to node ``i`` (0 is the head) and everything it started: a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes[i].pid, signal.SIGKILL)
        self.nodes[i].wait(timeout=60)

    def stop(self) -> None:
        for i in reversed(range(len(self.nodes))):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nodes[i].pid, signal.SIGTERM)
        for proc in self.nodes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
