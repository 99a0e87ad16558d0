"""Face clustering: npcface against the methods other projects ship, on all 13,233 LFW photos.

    python bench/cluster.py [--cache NPZ]                 # LFW table (peers in the same run)
    python bench/cluster.py --scale 1M                    # LFW among 1M Gaussian distractors
    python bench/cluster.py --incremental                 # incremental updates vs a full run
    python bench/cluster.py --tune                        # the eps of the thresholds (celeba+lag)
    python bench/cluster.py --calibrate                   # the shipped calibration (celeba+lag)

Embeddings: the default recogniser (``FaceRecognizer()``, preset accurate) over every photo of
LFW, celeba-subset and lag, computed once through ``embed_many`` and cached outside the
repository (``bench/gallery_scale.py --build-real-cache``; ``--cache`` names the file). A
photo without a face stays in the evaluation as a face of its own (a singleton).

Metrics (:mod:`npcface.eval.clustering`): BCubed precision/recall/F, pairwise F, NMI; noise
counts as singletons. Each method runs as it ships (its defaults) and swept over its
threshold; "best" is the best BCubed F of the sweep, which LFW's labels pick: only npcface's
default row is untuned. Time and peak memory of each method are measured in a forked child
(peak RSS above the parent's at the fork); the machine is shared, so compare times within a
run.

The peers, as their sources ship them:

* **insightface app** (deepinsight/insightface ``python-package/insightface/gui/core/
  clustering.py``, album page default ``DEFAULT_ALBUM_COSINE_THRESHOLD = 0.48``):
  ``sklearn.cluster.DBSCAN(eps=1 - 0.48, min_samples=2, metric="cosine")``; label -1 is noise.
* **dlib Chinese Whispers** (dlib ``tools/python/src/face_recognition.cpp``
  ``chinese_whispers_clustering`` and ``dlib/clustering/chinese_whispers.h``): an unweighted
  edge for every pair (self pairs included) closer than the threshold, 100 x N random node
  updates to the most common neighbour label. face_recognition users pass its tolerance (0.6
  on dlib's own descriptors: the model's verification threshold); for our model that is the
  calibrated verification threshold (FAR 1e-3).
* **immich** (immich-app/immich ``server/src/services/person.service.ts``
  ``handleRecognizeFaces``, defaults ``maxDistance 0.5, minFaces 3``): each face searches its
  ``minFaces`` nearest faces within ``maxDistance`` (itself included); with only itself it
  stays unassigned; with ``minFaces`` matches it is a core face; non-core faces are deferred
  until the core faces are done; a face joins the person of its first match that has one,
  else of its nearest assigned face within ``maxDistance``, else a core face founds a person.
* **Infomap** (the ``infomap`` package, two-level, on the k=50 graph with similarity weights
  above the threshold), the strongest untrained method in the face-clustering literature.
* **average-link HAC** at one threshold (npcface's engine with a flat threshold: SciPy's
  ``linkage(method="average")`` gives the same groups).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from npcface.calibration import CALIBRATED
from npcface.cluster import Clusterer, calibrate_clustering, cluster_embeddings
from npcface.cluster.calibration import calibration_for
from npcface.cluster.graph import knn_graph, knn_table
from npcface.cluster.thresholds import STRANGERS_PER_FACE as SIZE_RULE_EPS
from npcface.eval.clustering import clustering_scores, noise_as_singletons

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery_scale import data_root, default_real_cache, fit_gaussian  # noqa: E402

SWEEP = tuple(round(t, 2) for t in np.arange(0.36, 0.645, 0.02))


# ------------------------------------------------------------------------- data
def load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: python bench/gallery_scale.py --build-real-cache --n 0 "
            "(NPCFACE_BENCH_CACHE picks its folder)"
        )
    with np.load(path) as z:
        return {k: z[k] for k in ("emb", "label", "source", "path")}


def lfw(cache: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """LFW embeddings and labels (every photo of the data's LFW), and how many photos had no
    face (they are added as singletons by :func:`scores`)."""
    m = cache["source"] == "lfw"
    listed = len(list((data_root() / "lfw" / "images").glob("*/*.jpg")))
    return cache["emb"][m], cache["label"][m], listed - int(m.sum())


def scores(truth: np.ndarray, labels: np.ndarray, missing: int = 0) -> dict[str, float]:
    pred = noise_as_singletons(labels)
    if missing:  # photos without a face: each alone, each its own person as far as we know
        top = int(pred.max()) + 1
        pred = np.concatenate([pred, top + np.arange(missing)])
        truth = np.concatenate([truth, np.array([f"missing/{i}" for i in range(missing)])])
    s = clustering_scores(truth, pred)
    return {k: round(100 * v, 2) if isinstance(v, float) else v for k, v in s.to_dict().items()}


def measured(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(labels, seconds, peak MiB above the parent) of ``fn()`` run in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the parent's code
        code = 1
        try:
            os.close(r)
            start = _vm("VmRSS")
            t0 = time.perf_counter()
            out = fn()
            sec = time.perf_counter() - t0
            peak = _vm("VmHWM")
            buf = io.BytesIO()
            np.save(buf, np.asarray(out, np.int64))  # a pipe is not seekable: save to memory
            with os.fdopen(w, "wb") as fh:
                fh.write(buf.getvalue())
                fh.write(json.dumps([sec, (peak - start) / 1024]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"the measured child failed (status {status})")
    buf = io.BytesIO(data)
    labels = np.load(buf)
    sec, mib = json.loads(buf.read().decode())
    return labels, sec, mib


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])  # kB
    return 0.0


# ------------------------------------------------------------------------- peers
def dbscan(x: np.ndarray, sim: float, min_samples: int = 2) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=1.0 - sim, min_samples=min_samples, metric="cosine").fit_predict(x)


def edges_above(x: np.ndarray, sim: float, k: int | None = None) -> tuple[np.ndarray, ...]:
    """Every pair above ``sim`` (k=None, exact blocks) or the k-NN pairs above it."""
    if k is not None:
        g = knn_graph(x, k=k, min_sim=sim)
        return g.a, g.b, g.sim
    a, b, s = [], [], []
    n = len(x)
    for start in range(0, n, 2048):
        sims = x[start : start + 2048] @ x.T
        rows, cols = np.nonzero(sims > sim)
        rows = rows + start
        keep = cols > rows
        a.append(rows[keep])
        b.append(cols[keep])
        s.append(sims[rows[keep] - start, cols[keep]])
    return np.concatenate(a), np.concatenate(b), np.concatenate(s)


def chinese_whispers(x: np.ndarray, sim: float, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """dlib's chinese_whispers_clustering: unweighted edges below the distance threshold
    (cosine above ``sim`` for unit vectors), self edges included, random node updates."""
    n = len(x)
    a, b, _ = edges_above(x, sim)
    src = np.concatenate([a, b, np.arange(n)])
    dst = np.concatenate([b, a, np.arange(n)])
    order = np.argsort(src, kind="stable")
    dst = dst[order]
    start = np.searchsorted(src[order], np.arange(n + 1))
    labels = np.arange(n)
    rng = np.random.default_rng(seed)
    for idx in rng.integers(0, n, size=n * iterations).tolist():
        nb = dst[start[idx] : start[idx + 1]]
        if len(nb) == 1:
            continue
        vals, counts = np.unique(labels[nb], return_counts=True)
        labels[idx] = vals[np.argmax(counts)]  # ties: the smallest label, as std::map order
    return labels


def immich(x: np.ndarray, max_distance: float = 0.5, min_faces: int = 3) -> np.ndarray:
    """immich's handleRecognizeFaces over all faces in order (core faces, then deferred)."""
    import faiss

    n = len(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, ids = index.search(x, min_faces)
    within = sims >= 1.0 - max_distance
    person = np.full(n, -1, np.int64)
    nxt = 0

    def assigned_nearest(i: int) -> int:
        # nearest face that has a person, within maxDistance (numResults 1, hasPerson)
        have = np.flatnonzero(person >= 0)
        if len(have) == 0:
            return -1
        s = x[have] @ x[i]
        j = int(np.argmax(s))
        return int(person[have[j]]) if s[j] >= 1.0 - max_distance else -1

    def recognize(i: int, deferred: bool) -> bool:
        nonlocal nxt
        matches = ids[i][within[i]]
        if min_faces > 1 and len(matches) <= 1:
            return True  # only itself: stays unassigned
        core = len(matches) >= min_faces
        if not core and not deferred:
            return False
        pid = next((int(person[m]) for m in matches if person[m] >= 0), -1)
        if pid < 0:
            pid = assigned_nearest(i)
        if core and pid < 0:
            pid, nxt = nxt, nxt + 1
        if pid >= 0:
            person[i] = pid
        return True

    later = [i for i in range(n) if not recognize(i, False)]
    for i in later:
        recognize(i, True)
    return person


def infomap(x: np.ndarray, sim: float, k: int = 50) -> np.ndarray:
    from infomap import Infomap

    a, b, s = edges_above(x, sim, k=k)
    im = Infomap("--two-level --silent --seed 1")
    for u, v, w in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        im.add_link(u, v, w)
    result = im.run()
    # infomap 2.16 (here) returns a Result; versions whose run() returns None have get_modules
    modules = result.modules() if result is not None else im.get_modules()
    labels = np.full(len(x), -1, np.int64)
    for node, module in dict(modules).items():
        labels[node] = module
    return labels


def average_link(x: np.ndarray, sim: float) -> np.ndarray:
    return cluster_embeddings(x, threshold=sim).labels


# ------------------------------------------------------------------------- modes
def run_lfw(args: argparse.Namespace) -> None:
    x, truth, missing = lfw(load_cache(args.cache))
    x = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
    print(
        f"LFW: {len(x) + missing} photos ({missing} without a face, counted as singletons), "
        f"{len(np.unique(truth))} people; load average {os.getloadavg()[0]:.1f} (shared machine)"
    )
    rows = []

    def row(method: str, setting: str, fn: Callable[[], np.ndarray]) -> dict:
        labels, sec, mib = measured(fn)
        s = scores(truth, labels, missing)
        r = {"method": method, "setting": setting, "seconds": round(sec, 2), "peak_mib": round(mib)}
        r.update(s)
        rows.append(r)
        print(
            f"  {method:34s} {setting:22s} BCubed F {s['bcubed_f']:6.2f} (P {s['bcubed_precision']:6.2f} "
            f"R {s['bcubed_recall']:6.2f})  pairwise F {s['pairwise_f']:6.2f}  NMI {s['nmi']:6.2f}  "
            f"groups {s['clusters']:5d}  {sec:6.1f} s  {mib:6.0f} MiB",
            flush=True,
        )
        return r

    th = Clusterer(model=args.model).thresholds(len(x))  # the density rule's at local size N
    verify = CALIBRATED[args.model]["thresholds"]["default"]  # FAR 1e-3
    row(
        "npcface (default)",
        f"density; at N pair {th.pair:.3f}",
        lambda: cluster_embeddings(x, model=args.model).labels,
    )
    size = calibration_for(args.model).thresholds(len(x), SIZE_RULE_EPS)
    row(
        "npcface, size-scaled rule alone",
        f"pair {size.pair:.3f} floor {size.floor:.3f}",
        lambda: cluster_embeddings(x, model=args.model, density=False).labels,
    )
    peers: list[tuple[str, Callable[[float], np.ndarray], float | None, str]] = [
        ("average-link HAC (one threshold)", average_link, None, ""),
        ("DBSCAN min_samples 2 (insightface)", dbscan, 0.48, "as shipped: sim 0.48"),
        ("Chinese Whispers (dlib)", chinese_whispers, verify, f"verify thr {verify}"),
        ("immich minFaces 3", lambda x_, s: immich(x_, 1 - s, 3), 0.5, "as shipped: dist 0.5"),
        ("Infomap k=50", infomap, None, ""),
    ]
    sweep = args.sweep or SWEEP
    for name, fn, shipped, label in peers:
        if name.startswith("Infomap") and importlib.util.find_spec("infomap") is None:
            print(f"  {name}: pip install infomap to compare it")
            continue
        if shipped is not None:
            row(name, label, lambda fn=fn, s=shipped: fn(x, s))
        best = None
        for s in sweep:
            if name.startswith("Chinese") and s < 0.44 and not args.slow_peers:
                continue  # minutes per run at low thresholds (dense graph, Python updates)
            r = row(name, f"threshold {s:.2f}", lambda fn=fn, s=s: fn(x, s))
            if best is None or r["bcubed_f"] > best["bcubed_f"]:
                best = r
        if best is not None:
            print(
                f"  -> best {name}: {best['setting']} BCubed F {best['bcubed_f']:.2f} pairwise F {best['pairwise_f']:.2f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def gaussian_distractors(emb: np.ndarray, n: int, seed: int, start: int = 0) -> np.ndarray:
    """``n`` unit vectors from a Gaussian fitted to real embeddings (as bench/gallery_scale.py
    draws its distractors); ``start`` picks a later part of the same stream."""
    mean, chol = fit_gaussian(emb)
    out = np.empty((n, emb.shape[1]), np.float32)
    chunk = 1_000_000
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        z = np.random.default_rng([seed, 11, (start + c0) // chunk, start]).standard_normal(
            (c1 - c0, emb.shape[1]), dtype=np.float32
        )
        x = z @ chol.T.astype(np.float32) + mean.astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[c0:c1] = x
    return out


def run_scale(args: argparse.Namespace) -> None:
    cache = load_cache(args.cache)
    x_lfw, truth, missing = lfw(cache)
    n = args.scale
    t0 = time.perf_counter()
    distractors = gaussian_distractors(cache["emb"], n, args.seed)
    print(
        f"{n:,} distractors drawn in {time.perf_counter() - t0:.0f} s; load average "
        f"{os.getloadavg()[0]:.1f} (shared machine); threads {os.environ.get('OMP_NUM_THREADS', 'all')}"
    )
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(len(x_lfw), args.held_out, replace=False))
    base_lfw = np.setdiff1d(np.arange(len(x_lfw)), held)
    x = np.concatenate([x_lfw[base_lfw], distractors])
    m = len(base_lfw)

    # a peer in the same run: one exact FAISS search of 2,000 queries over the collection
    import faiss

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    t0 = time.perf_counter()
    flat.search(x[:2000], 33)
    peer = time.perf_counter() - t0
    del flat

    def fit() -> tuple[Clusterer, float, float]:
        c = Clusterer(model=args.model, progress=_progress("graph"))
        rss0 = _vm("VmRSS")
        t = time.perf_counter()
        res = c.fit(x)
        return c, res, time.perf_counter() - t, (_vm("VmHWM") - rss0) / 2**20

    c, res, sec, gib = fit()
    s = scores(truth[base_lfw], res.labels[:m])
    d = res.labels[m:]
    print(
        f"full: {len(x):,} faces in {sec:.0f} s ({sec / peer:.1f}x an exact 2k-query search "
        f"of the same collection, {peer:.1f} s), peak +{gib:.2f} GiB over the loaded data "
        f"(process peak {_vm('VmHWM') / 2**20:.2f} GiB); graph {res.graph}"
    )
    print(f"  thresholds {res.thresholds.to_dict()}")
    if not np.isnan(res.local_size).all():
        print(
            f"  local sizes (density rule), median: LFW faces {np.median(res.local_size[:m]):,.0f}, "
            f"distractors {np.median(res.local_size[m:]):,.0f}"
        )
    print(
        f"  LFW faces ({m:,}): BCubed F {s['bcubed_f']:.2f} (P {s['bcubed_precision']:.2f} "
        f"R {s['bcubed_recall']:.2f}) pairwise F {s['pairwise_f']:.2f}; distractors grouped "
        f"{int((d >= 0).sum()):,} of {n:,}"
    )
    alone = cluster_embeddings(x_lfw[base_lfw], model=args.model)
    sa = scores(truth[base_lfw], alone.labels)
    print(
        f"  the same LFW faces alone: BCubed F {sa['bcubed_f']:.2f} pairwise F {sa['pairwise_f']:.2f}"
    )
    # incremental: the held-out LFW faces and fresh distractors
    fresh = gaussian_distractors(cache["emb"], args.insert - args.held_out, args.seed + 1)
    new = np.concatenate([x_lfw[held], fresh])
    t = time.perf_counter()
    res2 = c.add(new)
    isec = time.perf_counter() - t
    order = np.concatenate([base_lfw, held])
    lab_lfw = np.concatenate([res2.labels[:m], res2.labels[len(x) : len(x) + len(held)]])
    si = scores(truth[order], lab_lfw)
    print(
        f"incremental: {len(new):,} new faces ({len(held):,} LFW, {len(fresh):,} distractors) "
        f"into {len(x):,} in {isec:.1f} s; LFW faces: BCubed F {si['bcubed_f']:.2f} "
        f"pairwise F {si['pairwise_f']:.2f}"
    )


def _progress(what: str) -> Callable[[int, int], None]:
    t0 = time.perf_counter()
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or done == total:
            last[0] = now
            print(f"  {what}: {done:,}/{total:,} faces searched, {now - t0:.0f} s", flush=True)

    return show


def run_incremental(args: argparse.Namespace) -> None:
    x, truth, _ = lfw(load_cache(args.cache))
    print(
        "LFW in random orders: a first part clustered, the rest added in batches, against one "
        "full run of all faces in the same order"
    )
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(x))
        xs, ts = x[perm], truth[perm]
        full = cluster_embeddings(xs, model=args.model)
        sf = scores(ts, full.labels)
        for base, batch, refit in (
            (12000, 1233, 1.25),
            (10000, 500, 1.25),
            (6700, 1000, 1.25),
            (6700, 1000, None),
            (1000, 1000, 1.25),
            (1000, 1000, None),
        ):
            c = Clusterer(model=args.model, refit_growth=refit)
            r = c.fit(xs[:base])
            for s0 in range(base, len(xs), batch):
                r = c.add(xs[s0 : s0 + batch])
            si = scores(ts, r.labels)
            agree = clustering_scores(
                noise_as_singletons(full.labels), noise_as_singletons(r.labels)
            )
            print(
                f"  seed {seed} first {base:5d} then batches of {batch:4d} (refit at "
                f"{refit or 'never'}): BCubed F {si['bcubed_f']:.2f} pairwise F {si['pairwise_f']:.2f} | full "
                f"{sf['bcubed_f']:.2f} / {sf['pairwise_f']:.2f} | agreement (BCubed F of one against "
                f"the other) {100 * agree.bcubed_f:.2f}",
                flush=True,
            )


def tuning_sets(
    cache: dict[str, np.ndarray], samples: int = 3
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """celeba-subset + lag, all of it, and ``samples`` samples with a long-tailed number of
    photos per person (P(n) ~ n^-2, at most what a person has), like a photo collection."""
    m = cache["source"] != "lfw"
    x, lab = cache["emb"][m], cache["label"][m]
    out = [("celeba+lag", x, lab)]
    ids, inv = np.unique(lab, return_inverse=True)
    ns = np.arange(1, 60)
    p = ns**-2.0
    p /= p.sum()
    for seed in range(samples):
        rng = np.random.default_rng(seed)
        keep = []
        for k in range(len(ids)):
            rows = np.flatnonzero(inv == k)
            keep.extend(rng.choice(rows, min(len(rows), rng.choice(ns, p=p)), replace=False))
        keep = np.sort(np.array(keep))
        out.append((f"long-tail sample {seed}", x[keep], lab[keep]))
    return out


def run_tune(args: argparse.Namespace) -> None:
    """eps (and the density rule's rank and passes) by the mean BCubed F over
    :func:`tuning_sets`; LFW is never read."""
    import npcface.cluster.density as D
    import npcface.cluster.thresholds as T

    cache = load_cache(args.cache)
    sets = tuning_sets(cache, args.samples)
    cal = calibration_for(args.model)
    eps_grid = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    grid: list[tuple] = [(False, e, 0, 0) for e in eps_grid]
    grid += [(True, e, D.BACKGROUND_RANK, D.REFINE_PASSES) for e in eps_grid]
    grid += [
        (True, D.STRANGERS_PER_FACE, r, p)
        for r in (10, 20, 30)
        for p in (0, 1, 2, 3)
        if (r, p) != (D.BACKGROUND_RANK, D.REFINE_PASSES)
    ]
    grid += [
        (True, D.STRANGERS_PER_FACE, D.BACKGROUND_RANK, D.REFINE_PASSES, sp)
        for sp in (3.0, 30.0, 1e9)
    ]
    # the spread of local sizes counted among true strangers (labels known): how far above
    # the median a face's own neighbourhood can genuinely be (TYPICAL_SPREAD)
    for name, x, lab in sets:
        xs = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), np.float32)
        sims, ids = knn_table(xs, 32)
        _, person = np.unique(lab, return_inverse=True)
        log_n = D.local_log_sizes(
            sims, ids, cal, len(xs), rows=np.arange(len(xs)), group=person, cap=np.inf
        )
        q50, q90 = np.percentile(log_n, [50, 90])
        print(
            f"{name}: local sizes among true strangers: median {10**q50:,.0f}, 90th "
            f"percentile {10**q90:,.0f} ({10 ** (q90 - q50):.1f}x the median)"
        )
    saved = (
        T.STRANGERS_PER_FACE,
        D.STRANGERS_PER_FACE,
        D.BACKGROUND_RANK,
        D.REFINE_PASSES,
        D.TYPICAL_SPREAD,
    )
    try:
        for density, eps, rank, passes, *spread in grid:
            if density:
                D.STRANGERS_PER_FACE, D.BACKGROUND_RANK, D.REFINE_PASSES = eps, rank, passes
                D.TYPICAL_SPREAD = spread[0] if spread else saved[4]
                what = (
                    f"density rule eps {eps:5.2f} rank {rank:2d} refining passes {passes} "
                    f"first-pass cap {D.TYPICAL_SPREAD:g} x median"
                )
            else:
                T.STRANGERS_PER_FACE = eps
                what = f"size-scaled rule eps {eps:5.2f}"
            fs = []
            line = f"{what}:"
            for name, x, lab in sets:
                r = cluster_embeddings(x, calibration=cal, density=density)
                s = scores(lab, r.labels)
                fs.append(s["bcubed_f"])
                line += f"  {name} (N={len(x)}) BCubed F {s['bcubed_f']:.2f};"
            print(line + f"  mean {np.mean(fs):.2f}", flush=True)
    finally:
        (
            T.STRANGERS_PER_FACE,
            D.STRANGERS_PER_FACE,
            D.BACKGROUND_RANK,
            D.REFINE_PASSES,
            D.TYPICAL_SPREAD,
        ) = saved


def run_calibrate(args: argparse.Namespace) -> None:
    cache = load_cache(args.cache)
    m = cache["source"] != "lfw"
    cal = calibrate_clustering(cache["emb"][m], cache["label"][m], model=args.model)
    print(cal)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=default_real_cache(), help="cached embeddings")
    p.add_argument(
        "--model",
        default="sface",
        help="the recogniser that made the cached embeddings (its calibrations are used)",
    )
    p.add_argument(
        "--scale",
        type=lambda v: int(float(v.replace("M", "e6").replace("k", "e3"))),
        default=None,
        help="distractors (e.g. 1M): the scale mode",
    )
    p.add_argument("--held-out", type=int, default=3000, help="--scale: LFW faces inserted later")
    p.add_argument("--insert", type=int, default=10_000, help="--scale: faces inserted in all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--incremental", action="store_true")
    p.add_argument("--tune", action="store_true")
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--samples", type=int, default=3, help="--tune: long-tailed samples")
    p.add_argument(
        "--typical-spread",
        type=float,
        default=None,
        help="override npcface.cluster.density.TYPICAL_SPREAD (inf: first pass capped at N)",
    )
    p.add_argument("--sweep", type=lambda v: tuple(float(s) for s in v.split(",")), default=None)
    p.add_argument("--slow-peers", action="store_true", help="Chinese Whispers below 0.44 too")
    p.add_argument("--json", default=None, help="write the LFW rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  [%(name)s] %(message)s")
    if args.typical_spread is not None:
        import npcface.cluster.density as D

        D.TYPICAL_SPREAD = args.typical_spread
        print(f"density rule: first-pass cap at {D.TYPICAL_SPREAD:g} x the median local size")
    if args.scale:
        run_scale(args)
    elif args.incremental:
        run_incremental(args)
    elif args.tune:
        run_tune(args)
    elif args.calibrate:
        run_calibrate(args)
    else:
        run_lfw(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
