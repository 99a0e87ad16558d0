"""Load on ``npcface serve`` against the library called in-process, in the same run.

Verify (two LFW photos) and identify (one LFW photo against a gallery of LFW identities) at
several concurrencies; for each, the library (``FaceRecognizer.verify`` /
``FaceRecognizer.identify`` from N threads, on the same encoded bytes a client sends) and
the service (N threads, each with an ``npcface.client.Client``, against ``npcface serve``
started as a subprocess on loopback) alternate so that drift on a shared machine hits both:
in blocks of 8 requests at concurrency 1 (the first of each not counted), in turns
lib-svc-svc-lib above. Bounded: at most
``--requests`` requests and ``--seconds`` seconds per side and concurrency level.

    python bench/serve_load.py --data ../shared/data/lfw

Goals (issue 10): at concurrency 1 the service adds <= 10 % to the library's time per
request; at concurrency 4 it keeps >= 90 % of the library's throughput.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def lfw_pairs(lfw: Path, n: int) -> list[tuple[bytes, bytes]]:
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    out = []
    for line in lines[: n // 2] + lines[300 : 300 + n - n // 2]:
        p = line.split()
        a = (p[0], int(p[1]))
        b = (p[0], int(p[2])) if len(p) == 3 else (p[2], int(p[3]))
        out.append(tuple(_img(lfw, *x).read_bytes() for x in (a, b)))
    return out


def _img(lfw: Path, name: str, i: int) -> Path:
    return lfw / "images" / name / f"{name}_{i:04d}.jpg"


def people_with(lfw: Path, min_images: int, count: int) -> list[tuple[str, list[Path]]]:
    out = []
    for d in sorted((lfw / "images").iterdir()):
        files = sorted(d.glob("*.jpg"))
        if len(files) >= min_images:
            out.append((d.name, files))
        if len(out) == count:
            break
    return out


WORKER = threading.local()
"""``WORKER.slot``: the index (0 .. concurrency - 1) of the load thread running a call."""


def run_load(
    call: Callable[[int], None], concurrency: int, max_requests: int, max_seconds: float
) -> tuple[float, np.ndarray]:
    """(requests per second, latencies in s) of ``call(i)`` from ``concurrency`` threads."""
    lock = threading.Lock()
    counter = iter(range(max_requests))
    lat: list[float] = []
    t_end = time.perf_counter() + max_seconds

    def worker(slot: int) -> None:
        WORKER.slot = slot
        while time.perf_counter() < t_end:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            call(i)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return len(lat) / wall, np.asarray(lat)


def paired(
    lib_call: Callable[[int], None],
    svc_call: Callable[[int], None],
    n: int,
    seconds: float,
    block: int = 8,
) -> dict[str, list]:
    """Concurrency 1: blocks of ``block`` requests of each side in turn (which side goes
    first alternates), so that drift on a shared machine hits both sides alike. The first
    request of each block is run but not counted, for either side: it pays for the other
    side's inference threads still spinning on the same cores (OpenVINO's spin for a
    moment after each call; npcface turns ONNX Runtime's spinning off), a cost that a service on a machine of its own does
    not have and that falls unevenly (the service's request crosses more threads)."""
    lat: dict[str, list[float]] = {"lib": [], "svc": []}
    t_end = time.perf_counter() + 2 * seconds
    for b, start in enumerate(range(0, n, block - 1)):
        if time.perf_counter() > t_end:
            break
        order = (("lib", lib_call), ("svc", svc_call))
        for side, call in order if b % 2 == 0 else order[::-1]:
            call(start)  # after the switch: not counted
            for i in range(start, min(start + block - 1, n)):
                t0 = time.perf_counter()
                call(i)
                lat[side].append(time.perf_counter() - t0)
    return {k: [(1 / float(np.mean(v)), np.asarray(v))] for k, v in lat.items()}


def empty_round_trip(client: Any, pause_s: float, n: int = 60) -> float:
    """Mean seconds of ``GET /healthz`` (no work in the server) after an idle pause of
    ``pause_s``, as a request at concurrency 1 finds the machine: the client has slept
    while the server worked, and waking processes costs time on a virtual machine."""
    lat = []
    for _ in range(n):
        time.sleep(pause_s)
        t0 = time.perf_counter()
        client.request("GET", "/healthz")
        lat.append(time.perf_counter() - t0)
    return float(np.mean(lat))


def start_server(root: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "npcface.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--gallery-root", str(root), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/lfw", help="LFW folder (pairs.txt, images/)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=160, help="most requests per side and level")
    ap.add_argument("--seconds", type=float, default=60.0, help="most seconds per side and level")
    ap.add_argument("--rounds", type=int, default=2, help="lib-svc-svc-lib rounds (c > 1)")
    ap.add_argument("--identities", type=int, default=200, help="gallery size for identify")
    ap.add_argument("--backend", default="auto", help="recogniser engine of both sides")
    ap.add_argument("--server-args", default="", help="more options for npcface serve")
    args = ap.parse_args()

    from npcface import FaceRecognizer, Gallery
    from npcface.client import Client
    from npcface.errors import LowQualityError

    lfw = Path(args.data)
    if not (lfw / "pairs.txt").is_file():
        print(f"LFW not found at {lfw} (pass --data)", file=sys.stderr)
        return 2
    pairs = lfw_pairs(lfw, 64)
    rec = FaceRecognizer(backend=args.backend)
    work = Path(tempfile.mkdtemp(prefix="npcface-serve-load-"))
    people = people_with(lfw, 3, args.identities)
    probes = [files[-1].read_bytes() for _, files in people]  # not enrolled
    with Gallery.create(work / "lfw", dim=rec.info.embedding_size, model=rec.info.name) as g:
        for name, files in people:  # the first two photos that pass the enrolment gate
            enrolled = 0
            for f in files[:-1]:
                try:
                    rec.enroll(g, name, [f])
                except LowQualityError:
                    continue
                enrolled += 1
                if enrolled == 2:
                    break
    extra = ["--backend", args.backend, *args.server_args.split()]
    print(
        f"{len(pairs)} LFW pairs, gallery of {len(people)} identities; backend {args.backend}; "
        f"server options {' '.join(extra)}; "
        f"{os.cpu_count()} CPUs; at most {args.requests} requests / {args.seconds:g} s per side "
        "and level",
        flush=True,
    )
    proc, url = start_server(work, extra)
    try:
        client = Client(url, timeout=120)
        deadline = time.monotonic() + 180
        while not client.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                print("the server did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
        lib_gallery = Gallery.open(work / "lfw", readonly=True)
        clients: dict[int, Client] = {}

        def svc() -> Client:
            # one client per load slot, kept across turns as an application keeps its
            # client (a new httpx client costs an SSL context and a TCP connection)
            slot = getattr(WORKER, "slot", 0)
            if slot not in clients:
                clients[slot] = Client(url, timeout=120)
            return clients[slot]

        ops = {
            "verify": (
                lambda i: rec.verify(*pairs[i % len(pairs)]),
                lambda i: svc().verify(*pairs[i % len(pairs)]),
            ),
            "identify": (
                lambda i: rec.identify(lib_gallery, probes[i % len(probes)], k=5),
                lambda i: svc().gallery("lfw").identify(probes[i % len(probes)], k=5),
            ),
        }
        for lib_call, svc_call in ops.values():  # warm both sides once
            lib_call(0)
            svc_call(0)
        rows = []
        for op, (lib_call, svc_call) in ops.items():
            for c in (int(x) for x in args.concurrency.split(",")):
                res: dict[str, list] = {"lib": [], "svc": []}
                if c == 1:  # blocks of requests, alternating: drift hits both alike
                    res = paired(lib_call, svc_call, args.requests, args.seconds)
                else:  # turns lib, svc, svc, lib, ... each a share of the budget
                    for side in ("lib", "svc", "svc", "lib") * args.rounds:
                        call = lib_call if side == "lib" else svc_call
                        share = 2 * args.rounds
                        res[side].append(
                            run_load(call, c, args.requests // share, args.seconds / share)
                        )
                row = {"op": op, "c": c}
                for side, runs in res.items():
                    lat = np.concatenate([r[1] for r in runs])
                    row[f"{side}_rps"] = float(np.mean([r[0] for r in runs]))
                    row[f"{side}_mean"] = float(lat.mean())
                    row[f"{side}_p50"] = float(np.percentile(lat, 50))
                    row[f"{side}_p99"] = float(np.percentile(lat, 99))
                    row[f"{side}_n"] = int(lat.size)
                rows.append(row)
                print(_fmt(row), flush=True)
        floors = {}
        for op in ops:
            one = next((r for r in rows if r["op"] == op and r["c"] == 1), None)
            if one:
                floors[op] = empty_round_trip(svc(), one["lib_mean"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print()
    for op in ops:
        one = next((r for r in rows if r["op"] == op and r["c"] == 1), None)
        four = next((r for r in rows if r["op"] == op and r["c"] == 4), None)
        if one:
            added = one["svc_mean"] / one["lib_mean"] - 1
            print(
                f"{op}: concurrency 1: the service adds {added:+.1%} to the library's mean time "
                f"per request (goal <= +10%: {'met' if added <= 0.10 else 'NOT met'})"
            )
        if op in floors and one:
            print(
                f"{op}: for comparison, an empty request (GET /healthz) after an idle pause as "
                f"long as the library's request takes {floors[op] * 1e3:.2f} ms, "
                f"{floors[op] / one['lib_mean']:+.1%} of the library's time: the part of the "
                "service's cost that any HTTP request pays on this machine"
            )
        if four:
            kept = four["svc_rps"] / four["lib_rps"]
            print(
                f"{op}: concurrency 4: the service keeps {kept:.1%} of the library's throughput "
                f"(goal >= 90%: {'met' if kept >= 0.90 else 'NOT met'})"
            )
    return 0


def _fmt(r: dict) -> str:
    return (
        f"{r['op']:<8} c={r['c']:<2}  library {r['lib_rps']:6.2f} req/s "
        f"p50 {r['lib_p50'] * 1e3:7.1f} ms p99 {r['lib_p99'] * 1e3:7.1f} ms (n={r['lib_n']})  |  "
        f"service {r['svc_rps']:6.2f} req/s p50 {r['svc_p50'] * 1e3:7.1f} ms "
        f"p99 {r['svc_p99'] * 1e3:7.1f} ms (n={r['svc_n']})  |  throughput ratio "
        f"{r['svc_rps'] / r['lib_rps']:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
