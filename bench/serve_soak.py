"""Soak test of the whole service: ``npcface serve --workers 2`` under mixed concurrent
traffic for a bounded time, with worker and master kills, then every invariant checked
against a ledger the client keeps.

Traffic (client threads, each request with a timeout): search embeddings, identify photos,
enrol embeddings and photos (with an ``Idempotency-Key``; some attempts abandoned by the
client after a few milliseconds and retried with the same key, as clients do after a
timeout), get and remove identities, and per gallery a cycle of DELETE and re-creation.
Partway, SIGKILL of one worker (uvicorn starts another), later of the master (the workers
follow it; the harness restarts the server on the same port), then of a worker again.

Invariants (counted, printed, and in ``--out`` as JSON):

* lost writes: an acknowledged template missing at the end (gallery and identity alive);
* answers from deleted data: a search or identify answer naming an identity whose
  removal, or its gallery's deletion, was acknowledged before the request was sent;
* removed data on disk: the bytes of a removed template's vector in any file under the
  gallery root at the end;
* duplicates: an identity holding more templates than distinct contents acknowledged;
* 5xx answers, and hangs (a request past its timeout of ``--hang-s`` seconds).

Identities are named ``<gallery>.g<generation>.p<n>``; a gallery is created again only once
the server's request timeout has passed since its deletion, so no request sent to an older
generation can still commit (a request past its deadline never commits), and a name of an
older generation in an answer is always an error.

    python bench/serve_soak.py --minutes 10 --data ../shared/data/lfw --out soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from npcface.serve.background import ServeProcess

DIM = 128
SERVER_TIMEOUT_S = 8.0


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass
class Identity:
    gallery: str
    gen: int
    name: str
    vectors: list[np.ndarray] = field(default_factory=list)  # acknowledged, embedding enrolment
    tids: set[int] = field(default_factory=set)  # acknowledged template ids
    contents: int = 0  # distinct contents acknowledged
    unknown_write: bool = False  # a write whose outcome the client never learnt
    unknown_removal: bool = False  # a removal whose outcome the client never learnt
    photos: bool = False
    removed_at: float | None = None  # monotonic time the removal was acknowledged
    busy: bool = False  # a thread is writing or removing it (one at a time)


@dataclass
class Generation:
    gallery: str
    gen: int
    live: bool = False  # created and acknowledged
    deleted_at: float | None = None
    identities: dict[str, Identity] = field(default_factory=dict)


class Ledger:
    """What the client was told, with the times it was told."""

    def __init__(self, galleries: list[str]) -> None:
        self.lock = threading.Lock()
        self.gens: dict[tuple[str, int], Generation] = {}
        self.current: dict[str, Generation] = {}
        self.counts: Counter[str] = Counter()
        self.violations: dict[str, list[str]] = {
            k: [] for k in ("lost", "deleted_answers", "on_disk", "duplicates", "5xx", "hangs")
        }
        for g in galleries:
            self.current[g] = self.gens[(g, 0)] = Generation(g, 0)

    def note(self, kind: str, text: str) -> None:
        with self.lock:
            self.violations[kind].append(text)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def parse(self, name: str) -> Identity | None:
        try:
            gallery, gen, _ = name.split(".")
            gen_n = int(gen[1:])
        except ValueError:
            return None
        g = self.gens.get((gallery, gen_n))
        return None if g is None else g.identities.get(name)

    def check_answer(self, names: list[str], sent: float, what: str) -> None:
        """Names in an answer to a request sent at ``sent``: none removed or deleted before."""
        with self.lock:
            for name in names:
                ident = self.parse(name)
                if ident is None:
                    continue
                gen = self.gens[(ident.gallery, ident.gen)]
                if gen.deleted_at is not None and gen.deleted_at < sent:
                    self.violations["deleted_answers"].append(f"{what}: {name} (gallery deleted)")
                elif ident.removed_at is not None and ident.removed_at < sent:
                    self.violations["deleted_answers"].append(f"{what}: {name} (removed)")


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.root or tempfile.mkdtemp(prefix="npcface-soak-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.galleries = [f"soak{i}" for i in range(args.galleries)]
        self.ledger = Ledger(self.galleries)
        self.stop = threading.Event()
        self.up = threading.Event()  # the server answers (cleared while it restarts)
        self.photos = self._photos(args.data)
        cmd = ["--workers", str(args.workers), "--preset", args.preset]
        cmd += ["--gallery-root", str(self.root), "--timeout", str(SERVER_TIMEOUT_S)]
        self.server = ServeProcess(cmd, log=self.root / "serve.log")
        self.names = iter(range(10**9))
        self.kills: list[str] = []

    @staticmethod
    def _photos(data: str | None) -> list[Path]:
        if not data:
            return []
        folder = Path(data) / "images"
        people = sorted(p for p in folder.iterdir() if p.is_dir())
        return [sorted(p.glob("*.jpg"))[0] for p in people[:: max(1, len(people) // 400)]]

    # -------------------------------------------------------------- plumbing
    def request(
        self, h: httpx.Client, method: str, path: str, *, timeout: float | None = None, **kw
    ) -> httpx.Response | None:
        """One attempt; None when the server was unreachable or the client gave up."""
        self.up.wait()
        limit = timeout if timeout is not None else self.args.hang_s
        self.ledger.count("requests")
        t0 = time.monotonic()
        try:
            r = h.request(method, f"{self.server.url}{path}", timeout=limit, **kw)
        except httpx.TimeoutException:
            if timeout is None:
                self.ledger.note("hangs", f"{method} {path} > {limit:g} s")
            self.ledger.count("abandoned")
            return None
        except httpx.TransportError:
            self.ledger.count("transport_errors")  # a kill or a restart under way
            return None
        finally:
            self.ledger.count("seconds_x1000", int((time.monotonic() - t0) * 1000))
        if r.status_code >= 500:
            self.ledger.note("5xx", f"{method} {path}: {r.status_code} {r.text[:200]}")
        self.ledger.count(f"http_{r.status_code}")
        return r

    def current(self, gallery: str) -> Generation | None:
        with self.ledger.lock:
            g = self.ledger.current[gallery]
            return g if g.live else None

    # -------------------------------------------------------------- traffic
    def client(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        pick = random.Random(seed)
        ops = [
            (self.search, 45),
            (self.enrol_embeddings, 22),
            (self.remove, 8),
            (self.get_identity, 8),
        ]
        if self.photos:
            ops += [(self.enrol_photos, 6), (self.identify, 11)]
        funcs, weights = zip(*ops, strict=True)
        with httpx.Client() as h:
            while not self.stop.is_set():
                if pick.random() < 0.05:  # a fresh connection now and then: any worker
                    h.close()
                    h = httpx.Client()
                pick.choices(funcs, weights)[0](h, rng, pick)
            h.close()

    def _alive_identity(
        self, pick: random.Random, photos: bool = False, claim: bool = False
    ) -> Identity | None:
        """An enrolled identity not removed; with ``claim``, one no other thread is writing
        or removing, marked busy (release it with :meth:`_free`)."""
        gen = self.current(pick.choice(self.galleries))
        if gen is None:
            return None
        with self.ledger.lock:
            alive = [
                i
                for i in gen.identities.values()
                if i.removed_at is None
                and i.tids
                and i.photos == photos
                and not (i.unknown_write or i.unknown_removal)
                and not (claim and i.busy)
            ]
            if not alive:
                return None
            ident = pick.choice(alive)
            if claim:
                ident.busy = True
            return ident

    def _free(self, ident: Identity) -> None:
        with self.ledger.lock:
            ident.busy = False

    def search(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random) -> None:
        ident = self._alive_identity(pick)
        gallery = ident.gallery if ident else pick.choice(self.galleries)
        q = ident.vectors[0] if ident and ident.vectors else unit(rng, 1)[0]
        sent = time.monotonic()
        r = self.request(
            h, "POST", f"/v1/galleries/{gallery}/search", json={"embeddings": [q.tolist()], "k": 5}
        )
        if r is not None and r.status_code == 200:
            self.ledger.count("searches")
            self.ledger.check_answer(
                [m["identity"] for m in r.json()["matches"][0]], sent, "search"
            )

    def identify(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random) -> None:
        gallery = pick.choice(self.galleries)
        photo = pick.choice(self.photos)
        sent = time.monotonic()
        r = self.request(
            h,
            "POST",
            f"/v1/galleries/{gallery}/identify",
            content=photo.read_bytes(),
            headers={"content-type": "image/jpeg"},
            params={"k": 5},
        )
        if r is not None and r.status_code == 200:
            self.ledger.count("identifies")
            names = [m["identity"] for f in r.json()["faces"] for m in f["matches"]]
            self.ledger.check_answer(names, sent, "identify")

    def _write(self, h: httpx.Client, gallery: str, name: str, pick: random.Random, **kw):
        """An enrolment, retried with its Idempotency-Key until answered: the answer, or
        None (gallery gone, or the run ended first: outcome unknown)."""
        key = uuid.uuid4().hex
        headers = {"Idempotency-Key": key}
        first = True
        while not self.stop.is_set() or first:
            # some first attempts are abandoned by the client at once, as after a timeout
            quick = first and pick.random() < 0.1
            first = False
            r = self.request(
                h,
                "POST",
                f"/v1/galleries/{gallery}/identities/{name}",
                headers=headers,
                timeout=0.005 if quick else None,
                **kw,
            )
            if r is None:
                time.sleep(0.05)
                continue
            if r.status_code == 201:
                return r.json()
            if r.status_code == 404:
                return None
            self.ledger.count(f"write_{r.json().get('error')}")
            return None
        return "unknown"

    def enrol_embeddings(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random):
        gen = self.current(pick.choice(self.galleries))
        if gen is None:
            return
        ident = self._alive_identity(pick, claim=True) if pick.random() < 0.3 else None
        if ident is None:
            ident = Identity(
                gen.gallery, gen.gen, f"{gen.gallery}.g{gen.gen}.p{next(self.names)}", busy=True
            )
            with self.ledger.lock:
                gen.identities[ident.name] = ident
        vecs = unit(rng, int(rng.integers(1, 4)))
        try:
            out = self._write(
                h, ident.gallery, ident.name, pick, json={"embeddings": vecs.tolist()}
            )
            self._acknowledge(ident, out, vecs, len(vecs))
        finally:
            self._free(ident)

    def enrol_photos(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random):
        gen = self.current(pick.choice(self.galleries))
        if gen is None:
            return
        name = f"{gen.gallery}.g{gen.gen}.p{next(self.names)}"
        ident = Identity(gen.gallery, gen.gen, name, photos=True, busy=True)
        with self.ledger.lock:
            gen.identities[ident.name] = ident
        chosen = pick.sample(self.photos, 2)
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in chosen]
        try:
            out = self._write(h, gen.gallery, ident.name, pick, files=files)
            self._acknowledge(ident, out, None, len(chosen))
        finally:
            self._free(ident)

    def _acknowledge(self, ident: Identity, out, vecs: np.ndarray | None, n: int) -> None:
        with self.ledger.lock:
            if out == "unknown":
                ident.unknown_write = True
                return
            if out is None:
                return
            tids = set(out["template_ids"])
            if len(tids) != n:  # distinct contents in, one template each
                self.ledger.violations["duplicates"].append(
                    f"{ident.name}: {n} contents answered with {len(tids)} distinct ids"
                )
            ident.tids |= tids
            ident.contents += n
            if vecs is not None:
                ident.vectors.extend(vecs)
            self.ledger.counts["acked_writes"] += 1

    def remove(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random) -> None:
        ident = self._alive_identity(pick, photos=pick.random() < 0.2, claim=True)
        if ident is None:
            return
        try:
            r = self.request(h, "DELETE", f"/v1/galleries/{ident.gallery}/identities/{ident.name}")
            if r is not None and r.status_code == 200:
                with self.ledger.lock:
                    ident.removed_at = time.monotonic()
                    self.ledger.counts["acked_removals"] += 1
            elif r is None:  # the outcome is unknown: leave it out of the checks
                with self.ledger.lock:
                    ident.unknown_removal = True
        finally:
            self._free(ident)

    def get_identity(self, h: httpx.Client, rng: np.random.Generator, pick: random.Random):
        ident = self._alive_identity(pick)
        if ident is None:
            return
        with self.ledger.lock:
            acked = set(ident.tids)  # what was acknowledged before the request went out
        sent = time.monotonic()
        r = self.request(h, "GET", f"/v1/galleries/{ident.gallery}/identities/{ident.name}")
        if r is None:
            return
        with self.ledger.lock:
            gone = ident.removed_at is not None and ident.removed_at < sent
            deleted = self.ledger.gens[(ident.gallery, ident.gen)].deleted_at
            gone = gone or (deleted is not None and deleted < sent)
        if r.status_code == 200:
            if gone:
                self.ledger.note("deleted_answers", f"get: {ident.name}")
            got = set(r.json()["template_ids"])
            with self.ledger.lock:
                removing = ident.busy or ident.removed_at is not None or ident.unknown_removal
            missing = acked - got
            if missing and not gone and not removing:
                self.ledger.note("lost", f"get {ident.name}: {sorted(missing)[:5]} missing")

    # -------------------------------------------------------------- galleries
    def create(self, h: httpx.Client, gallery: str, gen: int) -> None:
        while not self.stop.is_set():
            r = self.request(h, "POST", "/v1/galleries", json={"name": gallery, "dim": DIM})
            if r is not None and r.status_code in (201, 409):
                break
            time.sleep(0.1)
        with self.ledger.lock:
            g = self.ledger.gens.setdefault((gallery, gen), Generation(gallery, gen))
            g.live = True
            self.ledger.current[gallery] = g

    def cycle(self, gallery: str, offset: float) -> None:
        """Delete and create again, every ``--cycle-s`` seconds."""
        with httpx.Client() as h:
            self.create(h, gallery, 0)
            if self.stop.wait(offset):
                return
            gen = 0
            while not self.stop.wait(self.args.cycle_s):
                r = self.request(h, "DELETE", f"/v1/galleries/{gallery}")
                if r is None or r.status_code != 200:
                    continue
                with self.ledger.lock:
                    old = self.ledger.current[gallery]
                    old.deleted_at = time.monotonic()
                    old.live = False
                    self.ledger.counts["acked_gallery_deletions"] += 1
                # past the server's deadline, no request sent to the old one can commit
                if self.stop.wait(SERVER_TIMEOUT_S + 1):
                    return
                gen += 1
                self.create(h, gallery, gen)

    # -------------------------------------------------------------- faults
    def faults(self, minutes: float) -> None:
        total = minutes * 60
        plan = [(0.25, "worker"), (0.5, "master"), (0.75, "worker")]
        start = time.monotonic()
        for at, what in plan:
            if self.stop.wait(max(0.0, start + at * total - time.monotonic())):
                return
            if what == "worker":
                pid = self._a_worker()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    self.kills.append(f"worker {pid} at {time.monotonic() - start:.0f} s")
            else:
                self.up.clear()
                os.kill(self.server.pid, signal.SIGKILL)
                self.server.proc.wait()
                self.kills.append(f"master {self.server.pid} at {time.monotonic() - start:.0f} s")
                deadline = time.monotonic() + 60
                while any(_alive(p) for p in self.server.worker_pids):
                    if time.monotonic() > deadline:
                        self.ledger.note("hangs", "workers outlived the killed master")
                        break
                    time.sleep(0.1)
                self.server.start()
                self.up.set()

    def _a_worker(self) -> int | None:
        for _ in range(100):
            try:
                pid = httpx.get(f"{self.server.url}/healthz", timeout=5).json()["pid"]
            except (httpx.HTTPError, ValueError):
                time.sleep(0.1)
                continue
            if pid != self.server.pid:
                return int(pid)
        return None

    # -------------------------------------------------------------- the run
    def run(self) -> dict:
        a = self.args
        self.server.start()
        self.up.set()
        threads = [
            threading.Thread(target=self.cycle, args=(g, i * a.cycle_s / len(self.galleries)))
            for i, g in enumerate(self.galleries)
        ]
        threads += [threading.Thread(target=self.client, args=(s,)) for s in range(a.clients)]
        threads.append(threading.Thread(target=self.faults, args=(a.minutes,)))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        end = t0 + a.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))
            c = self.ledger.counts
            print(
                f"{time.monotonic() - t0:6.0f} s  requests {c['requests']:7d}  "
                f"writes {c['acked_writes']:6d}  removals {c['acked_removals']:5d}  "
                f"gallery deletions {c['acked_gallery_deletions']:3d}  "
                f"violations {sum(len(v) for v in self.ledger.violations.values())}",
                flush=True,
            )
        self.stop.set()
        for t in threads:
            t.join(timeout=120)
        seconds = time.monotonic() - t0
        self.final_checks()
        self.server.stop()
        return self.report(seconds)

    def final_checks(self) -> None:
        """Every acknowledged template present, no duplicate, nothing removed left on disk."""
        led = self.ledger
        with httpx.Client(timeout=60) as h:
            for gallery in self.galleries:
                gen = led.current[gallery]
                if not gen.live:
                    continue
                for ident in gen.identities.values():
                    if ident.removed_at is not None or ident.unknown_removal or not ident.tids:
                        continue
                    r = h.get(f"{self.server.url}/v1/galleries/{gallery}/identities/{ident.name}")
                    got = set(r.json().get("template_ids", [])) if r.status_code == 200 else set()
                    if ident.tids - got:
                        led.note("lost", f"{ident.name}: {sorted(ident.tids - got)[:5]} missing")
                    if len(got) > ident.contents and not ident.unknown_write:
                        led.note("duplicates", f"{ident.name}: {len(got)} > {ident.contents}")
                    for v in ident.vectors[:1]:
                        r = h.post(
                            f"{self.server.url}/v1/galleries/{gallery}/search",
                            json={"embeddings": [v.tolist()], "k": 1},
                        )
                        best = r.json()["matches"][0][0] if r.status_code == 200 else None
                        if best is None or best["identity"] != ident.name:
                            led.note("lost", f"{ident.name}: not found by its own vector")
        gone = [
            (ident.name, "removed" if ident.removed_at is not None else "gallery deleted", v)
            for gen in led.gens.values()
            for ident in gen.identities.values()
            if ident.removed_at is not None or gen.deleted_at is not None
            for v in ident.vectors
        ]
        needles = [
            (name, why, (v / np.linalg.norm(v)).astype(np.float32).tobytes()[:64])
            for name, why, v in gone
        ]
        self.ledger.counts["removed_vectors_scanned"] = len(needles)
        for path in self.root.rglob("*"):
            if path.is_file() and path.name != "serve.log":
                data = path.read_bytes()
                hits = [f"{name} ({why})" for name, why, n in needles if n in data]
                if hits:
                    led.note("on_disk", f"{path.relative_to(self.root)}: {hits[:3]}")

    def report(self, seconds: float) -> dict:
        c = self.ledger.counts
        out = {
            "minutes": round(seconds / 60, 2),
            "workers": self.args.workers,
            "preset": self.args.preset,
            "requests": c["requests"],
            "requests_per_s": round(c["requests"] / seconds, 1),
            "acknowledged_writes": c["acked_writes"],
            "acknowledged_removals": c["acked_removals"],
            "gallery_deletions": c["acked_gallery_deletions"],
            "searches": c["searches"],
            "identifies": c["identifies"],
            "abandoned_by_the_client": c["abandoned"],
            "transport_errors": c["transport_errors"],
            "removed_vectors_scanned_on_disk": c["removed_vectors_scanned"],
            "kills": self.kills,
            "status_counts": {k: v for k, v in sorted(c.items()) if k.startswith("http_")},
            "violations": {k: len(v) for k, v in self.ledger.violations.items()},
            "examples": {k: v[:5] for k, v in self.ledger.violations.items() if v},
        }
        return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preset", default="fast", help="the recogniser pipeline of the server")
    p.add_argument("--data", default=None, help="LFW folder: photos for enrol and identify")
    p.add_argument("--clients", type=int, default=12, help="client threads")
    p.add_argument("--galleries", type=int, default=4)
    p.add_argument("--cycle-s", type=float, default=30.0, help="seconds between deletions")
    p.add_argument("--hang-s", type=float, default=30.0, help="a request past this hangs")
    p.add_argument("--root", default=None, help="gallery root (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the report here as JSON")
    args = p.parse_args(argv)
    report = Soak(args).run()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if not any(report["violations"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
