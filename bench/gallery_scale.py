"""Gallery index choices at scale: build time, memory, queries/s and recall@1 vs exact search.

Data: clustered synthetic unit vectors. ``N / templates`` identity centres are spread
uniformly on the unit sphere; each identity gets ``templates`` noisy templates
``normalize(centre + noise * g / sqrt(D))``; every query is a fresh noisy sample of a random
identity. With ``--noise 0.6`` a query and a template of the same identity have cosine ~0.74
and different identities ~0 +- 1/sqrt(D): a stand-in for face embeddings (whose real
structure makes indexing easier, not harder).

Recall@1 is measured against exact search on the same vectors: ``tmpl`` = the top template
is the exact top template; ``id`` = the top identity is the exact top identity (what a
gallery returns). Memory is the size of the serialised index per vector: FAISS keeps the same
arrays in memory (``IDMap2`` adds a hash map of ~40 B/vector in memory only). Timings are the
best of ``--repeats`` batched runs; on a shared machine they move with the load average,
which is printed.

Examples (the figures in ``sdk/gallery/README.md`` come from these)::

    python bench/gallery_scale.py --n 20000 --dim 128
    python bench/gallery_scale.py --n 1000000 --dim 512 --index auto \\
        --index "PQ64x4fs,RFlat" --index PQ64x4fs --k-factor 64
    python bench/gallery_scale.py --n 1000000 --dim 128 --index auto \\
        --index "PQ16x4fs,RFlat" --index PQ32x4fs --k-factor 64 --gallery
    python bench/gallery_scale.py --n 10000000 --dim 128 --index auto --index PQ32x4fs \\
        --repeats 1
    python bench/gallery_scale.py --n 1000000 --dim 512 --index "HNSW32,Flat" \\
        --ef 64,128,256,512,1024          # ~50 min to build on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from npcface.gallery import index as ix


def default_indexes(dim: int) -> list[str]:
    """auto, the exhaustive fast scan it uses below 500k, and a compressed option."""
    m = ix.fastscan_m(dim)
    return ["auto", f"PQ{m}x4fs,RFlat", f"PQ{m}x4fs"]


@dataclass
class Row:
    index: str
    params: str
    build_s: float
    bytes_per_vector: float
    single_qps: float
    batched_qps: float
    speedup_single: float
    speedup_batched: float
    recall_template: float
    recall_identity: float


def make_data(n: int, dim: int, templates: int, noise: float, num_queries: int, seed: int):
    """Templates (n, dim) float32, their identity ids, queries and the queries' identities."""
    num_ids = n // templates
    n = num_ids * templates
    xb = np.empty((n, dim), dtype=np.float32)
    scale = np.float32(noise / np.sqrt(dim))
    rng_q = np.random.default_rng(seed + 1)
    query_ids = np.sort(rng_q.integers(0, num_ids, num_queries))
    queries = np.empty((num_queries, dim), dtype=np.float32)
    chunk = 100_000
    for c0 in range(0, num_ids, chunk):
        c1 = min(num_ids, c0 + chunk)
        rng = np.random.default_rng([seed, c0])
        centres = rng.standard_normal((c1 - c0, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        for t in range(templates):
            block = centres + scale * rng.standard_normal((c1 - c0, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            xb[c0 * templates + t : c1 * templates : templates] = block
        sel = np.flatnonzero((query_ids >= c0) & (query_ids < c1))
        if sel.size:
            q = centres[query_ids[sel] - c0] + scale * rng_q.standard_normal(
                (sel.size, dim), dtype=np.float32
            )
            queries[sel] = q / np.linalg.norm(q, axis=1, keepdims=True)
    owner = np.arange(n, dtype=np.int64) // templates
    perm = np.random.default_rng(seed + 2).permutation(num_queries)
    return xb, owner, queries[perm], query_ids[perm]


def make_real_data(path: str, n: int, dim: int, templates: int, num_queries: int, seed: int):
    """Real face embeddings among distractors fitted to them (same return as make_data).

    ``path`` is an ``.npz`` with ``emb`` (N, dim) unit float32 and ``label`` (N,) str (e.g.
    ``/work/npcface_cache/real_embeddings/sface_128.npz``: SFace over LFW, CelebA and LAG).
    One photo of up to ``num_queries`` people with two or more photos is held back as a
    query; the other real photos are templates. Distractor identities fill the gallery up
    to ``n`` templates: their centres drawn from a Gaussian fitted to the real identities'
    mean embeddings, their ``templates`` templates from a Gaussian fitted to the real
    within-identity residuals, normalised. Queries' top-1 should be their own identity;
    exact search's rank-1 is the reference every index is held to.
    """
    data = np.load(path)
    emb = np.asarray(data["emb"], dtype=np.float32)
    if emb.shape[1] != dim:
        raise SystemExit(f"{path}: embeddings are {emb.shape[1]}-d, --dim is {dim}")
    names, inv = np.unique(data["label"], return_inverse=True)
    counts = np.bincount(inv)
    rng = np.random.default_rng(seed)
    multi = np.flatnonzero(counts >= 2)
    probe_ids = np.sort(rng.choice(multi, min(num_queries, multi.size), replace=False))
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    probe_rows = order[starts[probe_ids] + rng.integers(0, counts[probe_ids])]
    keep = np.ones(len(emb), bool)
    keep[probe_rows] = False
    means = np.zeros((len(names), dim))
    np.add.at(means, inv, emb)
    means /= counts[:, None]
    multi_rows = counts[inv] >= 2
    resid = (emb - means[inv])[multi_rows] * np.sqrt(
        counts[inv][multi_rows] / (counts[inv][multi_rows] - 1)
    )[:, None]
    chol_c = np.linalg.cholesky(np.cov(means.T) + 1e-9 * np.eye(dim))
    chol_r = np.linalg.cholesky(np.cov(resid.T) + 1e-9 * np.eye(dim))
    mu_c = means.mean(axis=0)
    real_x, real_owner = emb[keep], inv[keep]
    num_dis = max(0, (n - len(real_x)) // templates)
    xb = np.empty((len(real_x) + num_dis * templates, dim), dtype=np.float32)
    xb[: len(real_x)] = real_x
    owner = np.empty(len(xb), dtype=np.int64)
    owner[: len(real_x)] = real_owner
    chunk = 50_000
    pos = len(real_x)
    for c0 in range(0, num_dis, chunk):
        m = min(chunk, num_dis - c0)
        centres = mu_c + rng.standard_normal((m, dim)) @ chol_c.T
        for _ in range(templates):
            block = centres + rng.standard_normal((m, dim)) @ chol_r.T
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            xb[pos : pos + m] = block
            owner[pos : pos + m] = len(names) + c0 + np.arange(m)
            pos += m
    queries = emb[probe_rows].copy()
    return xb, owner, queries, probe_ids.astype(np.int64)


def timed_single(search, queries: np.ndarray, limit: int, budget_s: float) -> float:
    """Queries/s answering one query at a time (at most ``limit`` queries or ``budget_s``).

    One OpenMP thread, as the gallery does for single queries: FAISS parallelises over
    queries, so a second thread only adds start-up cost to a one-query search.
    """
    with ix.single_thread():
        done = 0
        t0 = time.perf_counter()
        for i in range(min(limit, len(queries))):
            search(queries[i : i + 1])
            done += 1
            if time.perf_counter() - t0 > budget_s:
                break
        return done / (time.perf_counter() - t0)


def timed_batched(index, queries: np.ndarray, repeats: int) -> tuple[np.ndarray, float]:
    """Top-1 labels and the best queries/s of ``repeats`` batched searches."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _, labels = index.search(queries, 1)
        best = min(best, time.perf_counter() - t0)
    return labels, len(queries) / best


class _Exact:
    """Exact inner-product search over an array without copying it into an index."""

    def __init__(self, xb: np.ndarray) -> None:
        self.xb = xb

    def search(self, q: np.ndarray, k: int):
        return faiss.knn(q, self.xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def build(factory: str, xb: np.ndarray, seed: int, log) -> tuple[faiss.Index, float]:
    n, dim = xb.shape
    t0 = time.perf_counter()
    index = ix.create_index(factory, dim)
    size = ix.training_sample_size(factory, dim, n)
    if size:
        pick = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        sample = xb[pick]
        log(f"  training on {size} vectors")
        ix.train_index(index, sample)
        del sample, pick
    step = max(100_000, n // 20)
    for start in range(0, n, step):
        stop = min(n, start + step)
        index.add_with_ids(xb[start:stop], np.arange(start, stop, dtype=np.int64))
        if n > 2 * step:
            log(f"  added {stop}/{n} ({time.perf_counter() - t0:.0f} s)")
    return index, time.perf_counter() - t0


def file_size(index: faiss.Index) -> int:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = os.path.join(tmp, "x.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def bench_gallery(xb, owner, queries, truth, args, log, query_ids=None, exact_rank1=None):
    """The same data through the real :class:`~npcface.gallery.Gallery` (SQLite + auto index):
    enrolment rate, reopen time, identity search speed (k=1 and k=5) and recall@1."""
    import shutil

    from npcface.gallery import Gallery

    tmp = tempfile.mkdtemp(prefix="gallery-bench-", dir=os.environ.get("BENCH_TMP"))
    lines = []
    try:
        path = os.path.join(tmp, "g")
        names = np.array([f"id{i}" for i in range(int(owner.max()) + 1)], dtype=object)
        t0 = time.perf_counter()
        g = Gallery.create(path, args.dim)
        step = 50_000
        for start in range(0, len(xb), step):
            g.add_many(list(names[owner[start : start + step]]), xb[start : start + step])
        add_s = time.perf_counter() - t0
        g.close()
        save_s = time.perf_counter() - t0 - add_s
        t1 = time.perf_counter()
        g = Gallery.open(path, readonly=True)
        open_s = time.perf_counter() - t1
        log(f"gallery: {g!r}; add {len(xb) / add_s:.0f} templates/s, reopen {open_s:.1f} s")
        want = names[owner[truth]]
        lines.append(
            f"Gallery end to end ({g.factory}, {g.info().search_params}): "
            f"add_many {len(xb) / add_s:,.0f} templates/s (SQLite commit + index, auto "
            f"switch included), close/save {save_s:.1f} s, reopen {open_s:.1f} s, "
            f"database {os.path.getsize(os.path.join(path, 'gallery.db')) / 1e9:.2f} GB"
        )
        for k in (1, 5):
            t2 = time.perf_counter()
            res = g.search(queries, k=k)
            batched = len(queries) / (time.perf_counter() - t2)
            with ix.single_thread():
                done, t3 = 0, time.perf_counter()
                for i in range(min(args.single, len(queries))):
                    g.search(queries[i], k=k)
                    done += 1
                    if time.perf_counter() - t3 > args.single_budget:
                        break
                single = done / (time.perf_counter() - t3)
            recall = float(np.mean([r[0].identity == w for r, w in zip(res, want, strict=True)]))
            rank1 = ""
            if query_ids is not None and exact_rank1:
                own = names[query_ids]
                r1 = float(np.mean([r[0].identity == w for r, w in zip(res, own, strict=True)]))
                rank1 = f"; rank-1 {r1:.4f} = {r1 / exact_rank1:.4f} of exact's {exact_rank1:.4f}"
            lines.append(
                f"  search k={k}: single {single:.0f} q/s, batched {batched:.0f} q/s, "
                f"identity recall@1 vs exact {recall:.4f}{rank1}"
            )
        g.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lines


def bench_milvus_lite(xb, owner, queries, truth, args, log, query_ids, exact_rank1) -> list[str]:
    """The same data through a :class:`~npcface.gallery.MilvusGallery` on Milvus Lite (index
    ``auto``: HNSW over 50k templates), in ``$BENCH_TMP``: enrolment rate, build (flush) time,
    identity search speed (single and batched) and recall@1 against exact search, for each
    HNSW ``ef`` in ``--milvus-ef``."""
    import shutil

    from npcface.gallery import Gallery

    tmp = tempfile.mkdtemp(prefix="milvus-bench-", dir=os.environ.get("BENCH_TMP"))
    lines = []
    try:
        uri = f"milvus-lite://{os.path.join(tmp, 'g.db')}"
        names = np.array([f"id{i}" for i in range(int(owner.max()) + 1)], dtype=object)
        t0 = time.perf_counter()
        g = Gallery.create(uri, args.dim)
        tids = []
        step = 50_000
        for start in range(0, len(xb), step):
            tids += g.add_many(list(names[owner[start : start + step]]), xb[start : start + step])
            log(f"  milvus-lite: added {start + len(xb[start : start + step])}/{len(xb)}")
        add_s = time.perf_counter() - t0
        g.save()  # flush: Milvus Lite seals the segments and builds their index
        g.search(queries[:1], k=1)  # first search loads the segment indexes
        build_s = time.perf_counter() - t0 - add_s
        row_of = {int(t): i for i, t in enumerate(tids)}
        want = names[owner[truth]]
        log(f"milvus-lite: {g!r}; add {len(xb) / add_s:.0f} templates/s, flush {build_s:.0f} s")
        lines.append(
            f"Milvus Lite end to end ({g.factory}): add_many {len(xb) / add_s:,.0f} templates/s, "
            f"flush + index + first search {build_s:.0f} s, "
            f"file {sum(p.stat().st_size for p in Path(tmp).rglob('*') if p.is_file()) / 1e9:.2f} GB"
        )
        for ef in args.milvus_ef or [None]:
            if ef is not None and g.factory.startswith("HNSW"):
                g.set_search_params(ef=ef)
            t2 = time.perf_counter()
            res = g.search(queries, k=1)
            batched = len(queries) / (time.perf_counter() - t2)
            done, t3 = 0, time.perf_counter()
            for i in range(min(args.milvus_single, len(queries))):
                g.search(queries[i], k=1)
                done += 1
                if time.perf_counter() - t3 > args.single_budget:
                    break
            single = done / (time.perf_counter() - t3)
            r_i = float(np.mean([r[0].identity == w for r, w in zip(res, want, strict=True)]))
            r_t = float(
                np.mean(
                    [row_of.get(r[0].template_id) == t for r, t in zip(res, truth, strict=True)]
                )
            )
            own = names[query_ids]
            rank1 = float(np.mean([r[0].identity == w for r, w in zip(res, own, strict=True)]))
            lines.append(
                f"  {g.info().search_params}: single {single:.1f} q/s, batched {batched:.1f} q/s, "
                f"recall@1 vs exact: template {r_t:.4f}, identity {r_i:.4f}; rank-1 {rank1:.4f} "
                f"= {rank1 / exact_rank1 if exact_rank1 else float('nan'):.4f} of exact's "
                f"{exact_rank1:.4f}"
            )
            log(lines[-1])
        g.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lines


def param_grid(factory: str, dim: int, n: int, args) -> list[dict[str, int]]:
    traits = ix.traits(factory, dim)
    default = ix.default_search_params(factory, n, dim)
    grid: list[dict[str, int]] = []
    if traits.ivf:
        for p in args.nprobe:
            if p <= traits.nlist:
                g = {"nprobe": p}
                if traits.hnsw:
                    g["efSearch"] = max(64, 2 * p)
                grid.append(g)
    elif traits.hnsw:
        grid = [{"efSearch": e} for e in args.ef]
    if "k_factor" in traits.params:
        grid = [{**g, "k_factor": kf} for g in (grid or [{}]) for kf in args.k_factor]
    if default and default not in grid:
        grid.append(default)
    return grid or [{}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="templates in the gallery")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--templates", type=int, default=2, help="templates per identity")
    ap.add_argument("--noise", type=float, default=0.6, help="template/query noise level")
    ap.add_argument("--queries", type=int, default=1000, help="queries for batched search")
    ap.add_argument("--single", type=int, default=300, help="queries timed one at a time")
    ap.add_argument("--single-budget", type=float, default=20.0, help="seconds per single run")
    ap.add_argument(
        "--index",
        action="append",
        help="factory string or 'auto' (repeatable); default: auto, PQ{d/8}x4fs,RFlat, PQ{d/8}x4fs",
    )
    ap.add_argument("--ef", default="64,128,256,512", help="efSearch values for HNSW")
    ap.add_argument("--nprobe", default="16,64,256", help="nprobe values for IVF")
    ap.add_argument("--k-factor", default="4,16", help="k_factor values for refine indexes")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--ef-construction",
        type=int,
        default=ix.HNSW_EF_CONSTRUCTION,
        help="HNSW build quality (the gallery uses npcface.gallery.index.HNSW_EF_CONSTRUCTION)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="batched timings (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-exact-single",
        action="store_true",
        help="skip timing exact search one query at a time",
    )
    ap.add_argument(
        "--gallery",
        action="store_true",
        help="also run the data through a real Gallery (SQLite + auto index) in $BENCH_TMP",
    )
    ap.add_argument(
        "--real",
        default=None,
        metavar="NPZ",
        help="real-faces mode: real embeddings (emb, label) among distractors fitted to them",
    )
    ap.add_argument(
        "--milvus-lite",
        action="store_true",
        help="also run the data through a Milvus Lite gallery (pip install 'npcface[milvus]')",
    )
    ap.add_argument("--milvus-ef", default="", help="HNSW ef values for --milvus-lite")
    ap.add_argument(
        "--milvus-single", type=int, default=20, help="queries timed one at a time (Milvus)"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    args.ef = [int(v) for v in args.ef.split(",") if v]
    args.nprobe = [int(v) for v in args.nprobe.split(",") if v]
    args.k_factor = [int(v) for v in args.k_factor.split(",") if v]
    args.milvus_ef = [int(v) for v in args.milvus_ef.split(",") if v]
    indexes = args.index or default_indexes(args.dim)
    ix.HNSW_EF_CONSTRUCTION = args.ef_construction
    faiss.omp_set_num_threads(args.threads)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.0f}s] {msg}", file=sys.stderr, flush=True)

    log(
        f"faiss {faiss.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if args.real:
        xb, owner, queries, query_ids = make_real_data(
            args.real, args.n, args.dim, args.templates, args.queries, args.seed
        )
    else:
        xb, owner, queries, query_ids = make_data(
            args.n, args.dim, args.templates, args.noise, args.queries, args.seed
        )
    n = len(xb)
    log(f"data: {n} x {args.dim} ({xb.nbytes / 1e9:.2f} GB), {n // args.templates} identities")

    exact = _Exact(xb)
    labels, exact_batched = timed_batched(exact, queries, args.repeats)
    truth = labels[:, 0]
    exact_single = float("nan")
    if not args.no_exact_single:
        exact_single = timed_single(
            lambda q: exact.search(q, 1), queries, args.single, args.single_budget
        )
    genuine = float(np.mean(np.sum(queries * xb[truth], axis=1)))
    correct = float(np.mean(owner[truth] == query_ids))
    log(
        f"exact: {exact_single:.1f} q/s single, {exact_batched:.1f} q/s batched; "
        f"top-1 is the query's own identity for {correct:.4f}; mean top-1 cosine {genuine:.3f}"
    )
    rows = [
        Row(
            "exact (IDMap2,Flat)",
            "",
            0.0,
            4 * args.dim + 8,
            exact_single,
            exact_batched,
            1.0,
            1.0,
            1.0,
            1.0,
        )
    ]

    # one build per factory: "auto" and an explicit sweep of the same factory share it
    plan: dict[str, list[tuple[str, dict[str, int]]]] = {}
    for spec in indexes:
        if spec == "auto":
            factory = ix.auto_factory(n, args.dim)
            if factory == ix.FLAT_FACTORY:
                log("auto is exact search at this size: see the first row")
                continue
            plan.setdefault(factory, []).append(
                (f"auto={factory}", ix.default_search_params(factory, n, args.dim))
            )
        else:
            factory = ix.canonical_factory(spec, args.dim)
            for params in param_grid(factory, args.dim, n, args):
                plan.setdefault(factory, []).append((factory, params))

    for factory, runs in plan.items():
        log(f"building {factory}")
        try:
            index, build_s = build(factory, xb, args.seed, log)
        except MemoryError:
            log(f"{factory}: out of memory, skipped")
            continue
        fbytes = file_size(index)
        log(f"  built in {build_s:.0f} s, {fbytes / n:.0f} B/vector")
        seen = set()
        for label, params in runs:
            key = (label, tuple(sorted(params.items())))
            if key in seen:
                continue
            seen.add(key)
            if params:
                ix.apply_search_params(index, params)
            labels, batched = timed_batched(index, queries, args.repeats)
            single = timed_single(
                lambda q, _ix=index: _ix.search(q, 1), queries, args.single, args.single_budget
            )
            top = labels[:, 0]
            ok = top >= 0
            r_t = float(np.mean(top == truth))
            r_i = float(np.mean(ok & (owner[np.where(ok, top, 0)] == owner[truth])))
            p = ",".join(f"{k}={v}" for k, v in params.items())
            rows.append(
                Row(
                    label,
                    p,
                    build_s,
                    fbytes / n,
                    single,
                    batched,
                    single / exact_single if exact_single == exact_single else float("nan"),
                    batched / exact_batched,
                    r_t,
                    r_i,
                )
            )
            log(
                f"  {label} {p or '-'}: single {single:.0f} q/s, batched {batched:.0f} q/s, "
                f"recall@1 tmpl {r_t:.4f} id {r_i:.4f}"
            )
        index = None
        gc.collect()

    print(
        f"\nN={n} D={args.dim} templates/identity={args.templates} noise={args.noise} "
        f"queries={len(queries)} threads={args.threads} efConstruction={args.ef_construction} "
        f"faiss={faiss.__version__} "
        f"load-average-now={os.getloadavg()[0]:.1f}"
    )
    head = (
        f"{'index':<28} {'params':<22} {'build s':>8} {'B/vec':>7} "
        f"{'1-q q/s':>8} {'batch q/s':>9} {'x exact':>11} {'R@1 tmpl':>8} {'R@1 id':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.index:<28} {r.params:<22} {r.build_s:>8.0f} {r.bytes_per_vector:>7.0f} "
            f"{r.single_qps:>8.1f} {r.batched_qps:>9.1f} "
            f"{r.speedup_single:>5.1f}/{r.speedup_batched:<5.1f} {r.recall_template:>8.4f} "
            f"{r.recall_identity:>7.4f}"
        )
    if args.gallery:
        gallery_lines = bench_gallery(xb, owner, queries, truth, args, log, query_ids, correct)
        print()
        print("\n".join(gallery_lines))
    if args.milvus_lite:
        milvus_lines = bench_milvus_lite(xb, owner, queries, truth, args, log, query_ids, correct)
        print()
        print("\n".join(milvus_lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "exact_correct": correct, "rows": [asdict(r) for r in rows]},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
