"""Galleries shared by processes (one writer, readers that follow it) and by threads; the
writer lock's life (released by a dropped Gallery, refused twice in one process)."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from npcface.errors import GalleryCorruptError, GalleryError
from npcface.gallery import Gallery
from npcface.gallery import index as ix

DIM = 32
N_IDS = 300
TIMEOUT = 120.0


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def name(i: int) -> str:
    return f"person{i:03d}"


def plan_ops(seed: int) -> list[tuple[str, int]]:
    """Every one of N_IDS identities added once in random order; about half of them removed
    again, at random moments after their addition."""
    rng = np.random.default_rng(seed)
    to_add = [int(i) for i in rng.permutation(N_IDS)]
    present: list[int] = []
    ops: list[tuple[str, int]] = []
    while to_add:
        if present and rng.random() < 1 / 3:
            ops.append(("remove", present.pop(int(rng.integers(len(present))))))
        else:
            present.append(to_add.pop())
            ops.append(("add", present[-1]))
    return ops


def brute_force_top(vectors: np.ndarray, alive: list[int], q: np.ndarray, k: int) -> list:
    """Names of the k most similar live identities per query (one template each), by numpy."""
    sims = q @ vectors[alive].T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[name(alive[j]) for j in row] for row in order]


# ------------------------------------------------------------ processes (spawned)
def _writer(path: str, ops: list, inboxes: list, acks: list, report: mp.Queue) -> None:
    vectors = unit_vectors(N_IDS, seed=0)
    failures: list[str] = []
    g = Gallery.open(path)
    for op_no, (kind, i) in enumerate(ops):
        if kind == "add":
            g.add(name(i), vectors[i])
        else:
            g.remove(name(i))
        if op_no % 60 == 59:
            g.save()  # prunes the deletion log: readers behind the saved index must cope
        # committed: tell the readers, then wait for both to have checked their next search
        for box in inboxes:
            box.put((op_no, kind, i))
        for ack in acks:
            got_no, problem = ack.get(timeout=TIMEOUT)
            if got_no != op_no or problem:
                failures.append(f"op {op_no} ({kind} {name(i)}): reader says {problem!r}")
        if failures:
            break
    g.close()
    for box in inboxes:
        box.put(None)
    report.put(failures)


def _reader(path: str, inbox: mp.Queue, outbox: mp.Queue, seed: int) -> None:
    vectors = unit_vectors(N_IDS, seed=0)
    rng = np.random.default_rng(seed)
    removed: set[str] = set()  # removals acknowledged before the search at hand started
    searches = 0
    try:
        g = Gallery.open(path, readonly=True)
        outbox.put(("ready", None))
        while True:
            try:  # a short wait leaves the (shared, small) machine's cores to the writer
                msg = inbox.get(timeout=0.005)
            except queue.Empty:
                msg = ""
            if msg is None:
                break
            if msg:
                op_no, kind, i = msg
                got = g.search(vectors[i], k=5)[0]  # the next search must reflect the op
                searches += 1
                names = [m.identity for m in got]
                problem = ""
                if kind == "add" and (not got or names[0] != name(i) or got[0].similarity < 0.999):
                    problem = f"added {name(i)} not found first: {names}"
                if kind == "remove":
                    removed.add(name(i))
                    if name(i) in names:
                        problem = f"removed {name(i)} still returned: {names}"
                outbox.put((op_no, problem))
                continue
            # meanwhile: continuous searches, single and batched, of random identities
            q = vectors[rng.integers(N_IDS, size=int(rng.integers(1, 4)))]
            before = set(removed)
            for row in g.search(q, k=5):
                gone = [m.identity for m in row if m.identity in before]
                if gone:
                    outbox.put((-1, f"search returned acknowledged removals {gone}"))
            searches += 1
        final = g.search(vectors, k=5)
        answers = [[(m.identity, round(m.similarity, 5), m.template_id) for m in r] for r in final]
        outbox.put(("final", (answers, g.identities(), len(g), searches)))
        g.close()
    except BaseException as exc:  # reported, and the parent fails the test
        outbox.put(("error", f"{type(exc).__name__}: {exc}"))


def test_writer_and_two_readers_in_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "g")
    Gallery.create(path, DIM, index="Flat").close()
    ops = plan_ops(seed=5)
    assert sum(k == "add" for k, _ in ops) == N_IDS and sum(k == "remove" for k, _ in ops) > 100
    ctx = mp.get_context("spawn")
    inboxes = [ctx.Queue() for _ in range(2)]
    outboxes = [ctx.Queue() for _ in range(2)]
    report = ctx.Queue()
    readers = [
        ctx.Process(target=_reader, args=(path, inboxes[r], outboxes[r], r), daemon=True)
        for r in range(2)
    ]
    writer = ctx.Process(target=_writer, args=(path, ops, inboxes, outboxes, report), daemon=True)
    try:
        for p in readers:
            p.start()
        for box in outboxes:  # readers open the gallery before the writer starts
            assert box.get(timeout=TIMEOUT) == ("ready", None)
        t0 = time.perf_counter()
        writer.start()
        failures = report.get(timeout=TIMEOUT * 3)
        results = [box.get(timeout=TIMEOUT) for box in outboxes]
        elapsed = time.perf_counter() - t0
    finally:
        for p in [writer, *readers]:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert failures == []
    for kind, payload in results:
        assert kind == "final", payload
    assert writer.exitcode == 0

    alive = sorted({i for k, i in ops if k == "add"} - {i for k, i in ops if k == "remove"})
    vectors = unit_vectors(N_IDS, seed=0)
    with Gallery.open(path, readonly=True) as fresh:
        want = fresh.search(vectors, k=5)
        fresh_answers = [
            [(m.identity, round(m.similarity, 5), m.template_id) for m in r] for r in want
        ]
        assert fresh.identities() == [name(i) for k, i in ops if k == "add" and i in alive]
    # the fresh open itself agrees with numpy over the planned survivors
    assert [[m.identity for m in r] for r in want] == brute_force_top(vectors, alive, vectors, 5)
    for answers, identities, count, searches in (payload for _, payload in results):
        assert answers == fresh_answers
        assert identities == [name(i) for k, i in ops if k == "add" and i in alive]
        assert count == len(alive)
        assert searches > len(ops)  # they searched between the writer's operations too
    assert elapsed < TIMEOUT


# ------------------------------------------------------------------------ threads
def test_one_gallery_shared_by_threads(tmp_path: Path) -> None:
    """Searches from three threads while two threads add and remove identities; the
    searchers share the writer's Gallery object and a read-only one of the same gallery."""
    vectors = unit_vectors(N_IDS, seed=1)
    doomed = set(range(0, N_IDS, 4))  # added, then removed by their adder
    state: dict[int, str] = {}  # set only after the call returned
    errors: list[str] = []
    stop = threading.Event()
    g = Gallery.create(tmp_path / "g", DIM)
    r = Gallery.open(tmp_path / "g", readonly=True)

    def adder(ids: list[int]) -> None:
        try:
            for i in ids:
                g.add(name(i), vectors[i])
                state[i] = "added"
                if i in doomed:
                    g.remove(name(i))
                    state[i] = "removed"
        except BaseException as exc:
            errors.append(f"adder: {exc!r}")

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                known = list(state.items())
                if not known:
                    continue
                i, status = known[int(rng.integers(len(known)))]
                gallery = (g, r)[int(rng.integers(2))]
                names = [m.identity for m in gallery.search(vectors[i], k=3)[0]]
                if status == "removed" and name(i) in names:
                    errors.append(f"removed {name(i)} returned")
                if status == "added" and i not in doomed and names[:1] != [name(i)]:
                    errors.append(f"added {name(i)} not first: {names}")
                len(gallery)
                gallery.info()
        except BaseException as exc:
            errors.append(f"searcher: {exc!r}")

    searchers = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    adders = [threading.Thread(target=adder, args=(list(range(s, N_IDS, 2)),)) for s in range(2)]
    for t in searchers + adders:
        t.start()
    for t in adders:
        t.join(timeout=TIMEOUT)
    stop.set()
    for t in searchers:
        t.join(timeout=TIMEOUT)
    assert errors == []
    alive = [i for i in range(N_IDS) if i not in doomed]
    want = brute_force_top(vectors, alive, vectors, 4)
    for gallery in (g, r):
        assert [[m.identity for m in row] for row in gallery.search(vectors, k=4)] == want
        assert len(gallery) == len(alive) and gallery.check().ok
    r.close()
    g.close()


# --------------------------------------------------------------------- the lock
def _can_open_elsewhere(path: Path) -> str:
    code = textwrap.dedent(
        f"""
        from npcface.gallery import Gallery
        from npcface.errors import GalleryError
        try:
            Gallery.open({str(path)!r}).close()
            print("opened")
        except GalleryError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def test_dropped_gallery_releases_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "g"
    g = Gallery.create(path, 8)
    g.add("a", np.ones(8))
    del g  # no close(), no gc.collect(): the finalizer runs when the last reference goes
    g = Gallery.open(path)
    assert g.identities() == ["a"]
    # after an exception raised by a method
    with pytest.raises(GalleryError, match="dimension"):
        g.add("b", np.ones(3))
    del g
    gc.collect()
    assert _can_open_elsewhere(path) == "opened"  # released for other processes too
    g = Gallery.open(path)
    g.add("b", np.full(8, 2.0))
    g = None  # rebinding drops it as well
    # after an exception escaping a with block
    with pytest.raises(RuntimeError), Gallery.open(path) as g:
        raise RuntimeError("boom")
    del g
    # after a failed open (damaged index refused): nothing stays locked
    with Gallery.open(path) as g:
        g.add("c", np.full(8, 3.0))
    snap = ix.read_snapshot(path)
    (path / snap.file).write_bytes(b"damaged")
    with pytest.raises(GalleryCorruptError):
        Gallery.open(path, on_bad_index="raise")
    with Gallery.open(path) as g:  # rebuilt from the database
        assert g.identities() == ["a", "b", "c"] and g.check().ok


def test_second_writer_in_the_same_process_is_named(tmp_path: Path) -> None:
    path = tmp_path / "g"
    g = Gallery.create(path, 8)
    pid = os.getpid()
    with pytest.raises(
        GalleryError, match=rf"already open for writing in this process \(pid {pid}\)"
    ):
        Gallery.open(path)
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(path, 8)
    other = _can_open_elsewhere(path)
    assert f"open for writing in another process (pid {pid})" in other
    with Gallery.open(path, readonly=True) as reader:  # readers are welcome
        g.add("a", np.ones(8))
        assert reader.identities() == ["a"]
    g.close()
    with Gallery.open(path) as g2:  # closed: free again
        assert len(g2) == 1


# ------------------------------------------------- a reader left behind by the writer
def test_reader_follows_pruned_log_new_index_type_and_settings(tmp_path: Path) -> None:
    """A reader that did not look while the writer removed, saved (which prunes the deletion
    log), rebuilt as another index type and changed settings still answers right."""
    vectors = unit_vectors(120, seed=2)
    w = Gallery.create(tmp_path / "g", DIM)
    w.add_many([name(i) for i in range(100)], vectors[:100])
    r = Gallery.open(tmp_path / "g", readonly=True)
    assert len(r) == 100
    w.remove_many([name(i) for i in range(0, 100, 3)])
    w.save()  # the log of those deletions is gone
    w.add_many([name(i) for i in range(100, 120)], vectors[100:])
    alive = [i for i in range(120) if i % 3 or i >= 100]
    want = brute_force_top(vectors, alive, vectors, 3)
    assert [[m.identity for m in row] for row in r.search(vectors, k=3)] == want
    assert len(r) == len(alive) and r.check().ok
    w.rebuild("HNSW32,Flat")
    w.set_search_params(efSearch=512)
    w.remove(name(1))
    alive.remove(1)
    assert r.factory == "IDMap,HNSW32,Flat" and r.info().search_params == {"efSearch": 512}
    want = brute_force_top(vectors, alive, vectors, 3)
    assert [[m.identity for m in row] for row in r.search(vectors, k=3)] == want
    assert r.info().identities == len(alive) and r.check().ok
    w.rebuild("auto")  # back to exact search
    w.set_model("sface")
    assert r.factory == ix.FLAT_FACTORY and r.model == "sface" and r.check().ok
    assert [[m.identity for m in row] for row in r.search(vectors, k=3)] == want
    assert r.refresh() == 0  # nothing left to catch up
    r.close()
    w.close()


def test_uri_schemes_choose_the_backend(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match=r"no gallery backend for nosuch://"):
        Gallery.create("nosuch://somewhere", DIM)
    with Gallery.create(f"file://{tmp_path / 'g'}", DIM) as g:  # file:// is a local path
        g.add("a", np.ones(DIM))
    with Gallery.open(tmp_path / "g", readonly=True) as g:
        assert g.identities() == ["a"] and g.path == tmp_path / "g"
