"""Gallery index choices at scale: rank-1, TPIR, queries/s, build time, memory vs exact search.

**Real faces** (``--mode real``, the default; the figures in ``sdk/gallery/README.md`` and
``npcface.gallery.index`` come from it). Gallery: the first LFW photo of each of the 1,680
people with two or more, plus ``--n`` distractors drawn from a Gaussian fitted to the mean
and covariance of every real embedding (LFW, CelebA subset, LAG; the default recogniser
``FaceRecognizer(face_policy="center")``), normalised: their similarity to the probes has
the real strangers' mean and spread. Probes: the other 7,484 LFW photos of those people.
Each probe is searched for its top 2 (what a gallery asks FAISS for ``k=1``): rank-1 is its
top-1 being its mate; leaving its identity out, its best other result is a non-mated search
(as ``npcface eval lfw-identify``), which sets the threshold of TPIR at FPIR 1e-2. Both are
reported relative to exact search on the same gallery. The real embeddings are computed once
(``--build-real-cache``, ~23k images from ``$NPCFACE_DATA``, default ``../shared/data``) and
cached outside the repository (``--real-cache``). No 512-d face model ships here: ``--dim
512`` lifts the real 128-d embeddings into 512 dimensions (a random rotation carrying half of
each vector's energy, independent noise the other half, see :func:`lift`) and fits the
distractors' Gaussian to those.

**Synthetic** (``--mode synthetic``, the easy case kept for comparison with older figures).
``N / templates`` identity centres are spread uniformly on the unit sphere; each identity
gets ``templates`` noisy templates ``normalize(centre + noise * g / sqrt(D))``; every query
is a fresh noisy sample of a random identity. With ``--noise 0.6`` a query and a template of
the same identity have cosine ~0.74 and different identities ~0 +- 1/sqrt(D): far easier
than real faces, where mates score 0.3-0.9 and strangers reach 0.75. Recall@1 is measured
against exact search: ``tmpl`` = the top template is the exact top template; ``id`` = the top
identity is the exact top identity.

Memory is the size of the serialised index per vector: FAISS keeps the same arrays in memory
(``IDMap2`` adds a hash map of ~40 B/vector in memory only). Speeds are ratios to exact search
measured alternately in the same run (batched: best of ``--repeats``; single: one query at a
time on one thread, in rounds): on a shared machine absolute speeds move with the load.

Examples::

    python bench/gallery_scale.py --build-real-cache --n 0           # embed once (~10 min)
    python bench/gallery_scale.py --n 100k,1M --index auto \\
        --index "PQ32x4fs,RFlat" --k-factor 64,256 --plot /tmp/gallery_scale.png
    python bench/gallery_scale.py --n 1M --dim 512 --index auto
    python bench/gallery_scale.py --n 10M --index auto --repeats 1 --timing-queries 300
    python bench/gallery_scale.py --mode synthetic --n 1000000 --dim 128 --index auto
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from npcface.eval.metrics import tpir_at_fpir
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


def bench_gallery(xb, owner, queries, truth, args, log) -> list[str]:
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
            lines.append(
                f"  search k={k}: single {single:.0f} q/s, batched {batched:.0f} q/s, "
                f"identity recall@1 vs exact {recall:.4f}"
            )
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


# ------------------------------------------------------------------ real faces
REPO = Path(__file__).resolve().parents[1]
SOURCES = (("lfw", "lfw/images"), ("celeba", "celeba-subset"), ("lag", "lag"))
"""(label prefix, folder under the data root): every ``<folder>/<identity>/*.jpg``."""
FPIR = 1e-2
"""Open-set operating point reported (TPIR at this FPIR)."""
LIFT_SHARE = 0.5
"""d = 512 stand-in: share of each vector's energy carried by the real 128-d embedding."""


def data_root() -> Path:
    """Face data: ``$NPCFACE_DATA``, default ``../shared/data`` next to the repository."""
    return Path(os.environ.get("NPCFACE_DATA", REPO.parent / "shared" / "data"))


def default_real_cache(name: str = "sface_128") -> Path:
    """Cached real embeddings: ``$NPCFACE_BENCH_CACHE/real_embeddings/<name>.npz``, default
    ``../npcface_cache`` next to the repository (never inside it)."""
    root = Path(os.environ.get("NPCFACE_BENCH_CACHE", REPO.parent / "npcface_cache"))
    return root / "real_embeddings" / f"{name}.npz"


def list_real_images(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Relative paths, identity labels (``lfw/<Name>``, ``celeba/<id>``, ``lag/<id>``) and
    sources of every image of LFW, the CelebA subset and LAG under ``root``, sorted."""
    paths, labels, sources = [], [], []
    for source, folder in SOURCES:
        base = root / folder
        if not base.is_dir():
            raise FileNotFoundError(f"{base} not found (set NPCFACE_DATA)")
        for person in sorted(p for p in base.iterdir() if p.is_dir()):
            for img in sorted(person.glob("*.jpg")):
                paths.append(str(img.relative_to(root)))
                labels.append(f"{source}/{person.name}")
                sources.append(source)
    return paths, labels, sources


def build_real_cache(root: Path, out: Path, log, batch_size: int = 64) -> None:
    """Embed every image of :func:`list_real_images` with the default recogniser (face policy
    ``center``) and write ``out`` atomically: ``emb`` (N, d) float32 unit rows, ``label``,
    ``source``, ``path`` (N,) str. Images without a face are left out (and logged)."""
    from npcface import FaceRecognizer
    from npcface.eval.lfw import embed_paths

    paths, labels, sources = list_real_images(root)
    log(f"embedding {len(paths)} images under {root}")
    rec = FaceRecognizer(face_policy="center")
    table = embed_paths(rec, [root / p for p in paths], batch_size=batch_size, progress=True)
    ok = np.array([root / p not in table.failed for p in paths])
    for p, why in list(table.failed.items())[:20]:
        log(f"  no embedding: {p}: {why}")
    log(f"{ok.sum()} embedded, {len(paths) - ok.sum()} without a face, {table.seconds:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            emb=np.ascontiguousarray(table.embeddings[ok], dtype=np.float32),
            label=np.array(labels)[ok],
            source=np.array(sources)[ok],
            path=np.array(paths)[ok],
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    log(f"wrote {out}")


@dataclass(frozen=True)
class RealFaces:
    """The real-faces protocol, before distractors.

    Attributes:
        mates: (M, d) the first LFW photo of each person with two or more (gallery rows 0..M-1).
        probes: (P, d) the other LFW photos of those people.
        probe_mate: (P,) row in ``mates`` of each probe's person.
        mean: (d,) mean of every real embedding (LFW, CelebA subset, LAG).
        chol: (d, d) lower Cholesky factor of their covariance.
    """

    mates: np.ndarray
    probes: np.ndarray
    probe_mate: np.ndarray
    mean: np.ndarray
    chol: np.ndarray


def lfw_split(labels: np.ndarray, paths: np.ndarray, sources: np.ndarray):
    """Rows of the mates (first photo of each LFW person with 2+) and of the probes (the rest),
    and each probe's mate as an index into the mates."""
    lfw = np.flatnonzero(sources == "lfw")
    lfw = lfw[np.lexsort((paths[lfw], labels[lfw]))]
    people, first, counts = np.unique(labels[lfw], return_index=True, return_counts=True)
    keep = counts >= 2
    mates = lfw[first[keep]]
    slot = {p: i for i, p in enumerate(people[keep])}
    is_mate = set(mates.tolist())
    probes = np.array([r for r in lfw if labels[r] in slot and r not in is_mate], dtype=np.int64)
    probe_mate = np.array([slot[labels[r]] for r in probes], dtype=np.int64)
    return mates, probes, probe_mate


def fit_gaussian(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and lower Cholesky factor (d, d) of the covariance of ``emb`` (float64)."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) + 1e-9 * np.eye(x.shape[1])
    return mean, np.linalg.cholesky(cov)


def lift(emb: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A ``dim``-d stand-in for a wider recogniser's embeddings (no 512-d face model ships
    here): the real vectors rotated into a random ``d``-d subspace carry :data:`LIFT_SHARE` of
    the energy, independent Gaussian noise in the other ``dim - d`` dimensions the rest, then
    rows are normalised. Cosines between images shrink by that share; their order, and what
    separates mates from strangers, comes from the real embeddings."""
    n, d = emb.shape
    rng = np.random.default_rng([seed, dim, 7])
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis, rest = q[:, :d].T, q[:, d:].T
    g = rng.standard_normal((n, dim - d)) / np.sqrt(dim - d)
    out = np.sqrt(LIFT_SHARE) * (emb @ basis) + np.sqrt(1 - LIFT_SHARE) * (g @ rest)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def load_real(cache: Path, dim: int, seed: int) -> RealFaces:
    """The protocol from the cached embeddings (lifted to ``dim`` when wider than them)."""
    with np.load(cache) as z:
        emb, labels, paths, sources = z["emb"], z["label"], z["path"], z["source"]
    if dim != emb.shape[1]:
        if dim < emb.shape[1]:
            raise SystemExit(f"--dim {dim} is smaller than the cached {emb.shape[1]}-d embeddings")
        emb = lift(emb, dim, seed)
    mates, probes, probe_mate = lfw_split(labels, paths, sources)
    mean, chol = fit_gaussian(emb)
    return RealFaces(
        np.ascontiguousarray(emb[mates]), np.ascontiguousarray(emb[probes]), probe_mate, mean, chol
    )


def real_gallery(real: RealFaces, n: int, seed: int, log) -> np.ndarray:
    """(M + n, d) float32: the mates, then ``n`` unit distractors drawn from the fitted
    Gaussian (in chunks of 1M with their own seeds: the first 1M of a 10M set are the 1M set)."""
    m, d = real.mates.shape
    xb = np.empty((m + n, d), dtype=np.float32)
    xb[:m] = real.mates
    chol_t = real.chol.T.astype(np.float32)
    mean = real.mean.astype(np.float32)
    chunk = 1_000_000
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        z = np.random.default_rng([seed, 11, c0 // chunk]).standard_normal(
            (c1 - c0, d), dtype=np.float32
        )
        x = z @ chol_t
        x += mean
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        xb[m + c0 : m + c1] = x
        if n > chunk:
            log(f"  distractors {c1}/{n}")
    return xb


def open_set(dist: np.ndarray, labels: np.ndarray, probe_mate: np.ndarray) -> tuple[float, float]:
    """Rank-1 and TPIR at :data:`FPIR` from top-2 results (gallery rows = ids).

    Every probe is searched twice in effect: mated (its top-1) and, leaving its identity out,
    non-mated (its best other result, as ``npcface eval lfw-identify`` does)."""
    correct = labels[:, 0] == probe_mate
    nonmated = np.where(correct, dist[:, 1], dist[:, 0])
    tpir, _ = tpir_at_fpir(dist[:, 0], correct, nonmated, FPIR)
    return float(correct.mean()), float(tpir)


@dataclass
class Speed:
    """Queries/s of an index and of exact search, measured alternately in the same run."""

    single: float
    batched: float
    exact_single: float
    exact_batched: float


def paired_speed(
    index, exact, queries: np.ndarray, args, k: int = 2, single: int | None = None
) -> Speed:
    """Time ``index`` and ``exact`` in turns: batched (best of ``--repeats``, on the first
    ``--timing-queries`` probes) and one query at a time on one thread (``--rounds`` rounds of
    ``--single`` index queries then ``--exact-single`` exact ones)."""
    tq = queries[: args.timing_queries]
    best_i = best_e = float("inf")
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        exact.search(tq, k)
        best_e = min(best_e, time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(tq, k)
        best_i = min(best_i, time.perf_counter() - t0)
    t_i = t_e = 0.0
    n_i = n_e = 0
    pos = 0
    n_single = args.single if single is None else single
    with ix.single_thread():
        for _ in range(max(1, args.rounds)):
            t0 = time.perf_counter()
            for _ in range(args.exact_single):
                exact.search(queries[pos % len(queries)][None], k)
                pos += 1
            t_e += time.perf_counter() - t0
            n_e += args.exact_single
            t0 = time.perf_counter()
            for _ in range(n_single):
                index.search(queries[pos % len(queries)][None], k)
                pos += 1
            t_i += time.perf_counter() - t0
            n_i += n_single
    return Speed(n_i / t_i, len(tq) / best_i, n_e / t_e, len(tq) / best_e)


@dataclass
class RealRow:
    n: int
    dim: int
    index: str
    params: str
    build_s: float
    bytes_per_vector: float
    single_qps: float
    batched_qps: float
    x_single: float
    x_batched: float
    rank1: float
    rank1_rel: float
    tpir: float
    tpir_rel: float

    @property
    def keeps(self) -> bool:
        """Within 1 % of exact search on both accuracy figures."""
        return self.rank1_rel >= 0.99 and self.tpir_rel >= 0.99


def measured_row(n, dim, label, params, build_s, bpv, sp: Speed, rank1, tpir) -> RealRow:
    """A row with speeds relative to exact search's (accuracy relative: set by the caller)."""
    x_single, x_batched = sp.single / sp.exact_single, sp.batched / sp.exact_batched
    return RealRow(
        n, dim, label, params, build_s, bpv, sp.single, sp.batched, x_single, x_batched,
        rank1, float("nan"), tpir, float("nan"),
    )  # fmt: skip


def run_real(args, n: int, dim: int, indexes: list[str], log) -> list[RealRow]:
    """One gallery size: exact search, then every index and parameter set of ``indexes``."""
    real = load_real(args.real_cache, dim, args.seed)
    if args.probes and args.probes < len(real.probes):  # a random subset, for 10M runs
        pick = np.sort(
            np.random.default_rng(args.seed).choice(len(real.probes), args.probes, replace=False)
        )
        real = replace(real, probes=real.probes[pick], probe_mate=real.probe_mate[pick])
    xb = real_gallery(real, n, args.seed, log)
    total, queries = len(xb), real.probes
    log(
        f"real faces: {len(real.mates)} mates + {n} distractors = {total} x {dim} "
        f"({xb.nbytes / 1e9:.2f} GB), {len(queries)} probes"
    )
    exact = _Exact(xb)
    t0 = time.perf_counter()
    e_dist, e_lab = exact.search(queries, 2)
    e_rank1, e_tpir = open_set(e_dist, e_lab, real.probe_mate)
    stranger = queries[:2000] @ xb[len(real.mates) : len(real.mates) + 20000].T
    log(
        f"exact: rank-1 {e_rank1:.4f}, TPIR@FPIR={FPIR:g} {e_tpir:.4f} "
        f"({time.perf_counter() - t0:.0f} s); probe-distractor cosine "
        f"{stranger.mean():.3f} +- {stranger.std():.3f}"
    )
    del stranger
    rows = [
        RealRow(
            n,
            dim,
            "exact (IDMap2,Flat)",
            "",
            0.0,
            4 * dim + 8,
            *[float("nan")] * 2,
            1.0,
            1.0,
            e_rank1,
            1.0,
            e_tpir,
            1.0,
        )
    ]
    for factory, runs in build_plan(indexes, total, dim, args, log).items():
        log(f"building {factory}")
        try:
            index, build_s = build(factory, xb, args.seed, log)
        except MemoryError:
            log(f"{factory}: out of memory, skipped")
            continue
        fbytes = file_size(index)
        log(f"  built in {build_s:.0f} s, {fbytes / total:.0f} B/vector")
        for label, params in runs:
            if params:
                ix.apply_search_params(index, params)
            dist, lab = index.search(queries, 2)
            rank1, tpir = open_set(dist, lab, real.probe_mate)
            sp = paired_speed(index, exact, queries, args)
            p = ",".join(f"{k}={v}" for k, v in params.items())
            row = measured_row(n, dim, label, p, build_s, fbytes / total, sp, rank1, tpir)
            row = replace(row, rank1_rel=rank1 / e_rank1, tpir_rel=tpir / e_tpir)
            rows.append(row)
            log(
                f"  {label} {p or '-'}: rank-1 {rank1:.4f} ({row.rank1_rel:.3f} of exact), "
                f"TPIR {tpir:.4f} ({row.tpir_rel:.3f}), x exact {row.x_single:.1f} single "
                f"/ {row.x_batched:.1f} batched"
            )
        index = None
        gc.collect()
    if args.milvus_lite or args.milvus:
        rows += milvus_lite_rows(args, real, xb, exact, e_rank1, e_tpir, log)
    return rows


def milvus_lite_rows(args, real: RealFaces, xb: np.ndarray, exact, e_rank1, e_tpir, log):
    """The same gallery through :class:`~npcface.gallery.Gallery` on Milvus, in the same run:
    Milvus Lite (``--milvus-lite``, a file in a temporary or ``--milvus-keep`` folder) or a
    Milvus server (``--milvus URI``, collection ``bench_real_<N>``, kept between runs when
    ``--milvus-keep`` is given). One gallery (one identity per row, inserted in blocks of
    50k), then for each index spec a rebuild as that index and a sweep of its search
    parameters (``--milvus-ef`` for HNSW, ``--milvus-nprobe`` for IVF): rank-1 and TPIR from
    each probe's top 2 identities, single and batched queries/s against exact search measured
    alternately (see :func:`paired_speed`). Build time: inserts, then rebuild + load + first
    search per index. On a server, the server's resident memory (every process listening on
    the URI's port, with its children) after each load."""
    import shutil

    from npcface.gallery import Gallery

    total, dim = xb.shape
    m = len(real.mates)
    rows: list[RealRow] = []
    names = np.array([f"r{i}" for i in range(total)], dtype=object)
    server = args.milvus
    what = "milvus-server" if server else "milvus-lite"
    specs = args.milvus_index if server else args.milvus_lite
    tmp = None
    if server:
        uri = f"{server.rstrip('/')}/bench_real_{total - m}x{dim}_seed{args.seed}"
    else:
        if args.milvus_keep:  # kept between runs: insert once, measure indexes in later runs
            tmp = str(args.milvus_keep / f"real_{total - m}x{dim}_seed{args.seed}")
        else:
            tmp = tempfile.mkdtemp(prefix="milvus-bench-", dir=os.environ.get("BENCH_TMP"))
        uri = f"milvus-lite://{os.path.join(tmp, 'g.db')}"
    insert_s = float("nan")
    try:
        existing = None
        if server or (tmp and (Path(tmp) / "complete").is_file()):
            try:
                existing = Gallery.open(uri)
            except Exception:  # noqa: BLE001 - not there yet
                existing = None
        if (
            existing is not None
            and existing.info().templates == total
            and (server is None or args.milvus_keep)
        ):
            g = existing
            log(f"{what}: reusing {uri} ({total} templates)")
        else:
            if existing is not None:
                existing.close()
                if server:
                    _drop_server_gallery(uri)
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
                os.makedirs(tmp, exist_ok=True)
            t0 = time.perf_counter()
            g = Gallery.create(uri, dim=dim, index="FLAT")
            step = 50_000
            for start in range(0, total, step):
                g.add_many(list(names[start : start + step]), xb[start : start + step])
                log(
                    f"  {what}: added {min(total, start + step)}/{total} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
            g.save()
            insert_s = time.perf_counter() - t0
            log(
                f"{what}: {total} rows inserted + flushed in {insert_s:.0f} s "
                f"({total / insert_s:,.0f}/s)"
            )
            if tmp:
                (Path(tmp) / "complete").write_text(f"inserted {total} rows in {insert_s:.0f} s\n")

        class _Adapter:
            """``index.search(q, k)`` -> (similarities, gallery rows) through a gallery."""

            def __init__(self, gallery) -> None:
                self.gallery = gallery

            def search(self, q: np.ndarray, k: int):
                res = self.gallery.search(q, k=k)
                dist = np.full((len(q), k), -np.inf, dtype=np.float32)
                lab = np.full((len(q), k), -1, dtype=np.int64)
                for i, row in enumerate(res):
                    for j, mt in enumerate(row[:k]):
                        dist[i, j] = mt.similarity
                        lab[i, j] = int(mt.identity[1:])
                return dist, lab

        adapter = _Adapter(g)
        levels = args.milvus_consistency if server else ["Strong"]
        for spec in specs:
            t1 = time.perf_counter()
            g.rebuild(spec)
            adapter.search(real.probes[:1], 2)  # loads the segment indexes
            build_s = time.perf_counter() - t1
            kind = g.factory
            rss = _server_rss(server) if server else float("nan")
            log(
                f"  {what} {kind}: rebuilt + loaded in {build_s:.0f} s"
                + (f", server resident memory {rss / 2**30:.2f} GiB" if server else "")
            )
            if kind.startswith("HNSW"):
                grid = [{"ef": e} for e in args.milvus_ef]
            elif kind.startswith("IVF"):
                grid = [{"nprobe": p} for p in args.milvus_nprobe]
            else:
                grid = [{}]
            for params in grid:
                if params:
                    g.set_search_params(**params)
                t2 = time.perf_counter()
                dist, lab = adapter.search(real.probes, 2)
                rank1, tpir = open_set(dist, lab, real.probe_mate)
                all_s = time.perf_counter() - t2
                p = ",".join(f"{k}={v}" for k, v in g.info().search_params.items())
                for level in levels:  # same answers (nothing is written now), other speeds
                    other = None
                    if level != "Strong":
                        sep = "&" if "?" in uri else "?"
                        other = Gallery.open(f"{uri}{sep}consistency={level}")
                        if params:
                            other.set_search_params(**params)
                    timed = _Adapter(other) if other is not None else adapter
                    sp = paired_speed(timed, exact, real.probes, args, single=args.milvus_single)
                    if other is not None:
                        other.close()
                    label = f"{what} {kind}" + (f" {level}" if server else "")
                    row = measured_row(
                        total - m, dim, label, p, build_s, rss / total, sp, rank1, tpir
                    )
                    row = replace(row, rank1_rel=rank1 / e_rank1, tpir_rel=tpir / e_tpir)
                    rows.append(row)
                    log(
                        f"  {label} {p or '-'}: rank-1 {rank1:.4f} "
                        f"({row.rank1_rel:.3f} of exact), TPIR {tpir:.4f} ({row.tpir_rel:.3f}), "
                        f"{sp.single:.1f} q/s single, {sp.batched:.0f} q/s batched = x exact "
                        f"{row.x_single:.3g} / {row.x_batched:.3g} (all probes {all_s:.0f} s)"
                    )
        g.close()
    finally:
        if tmp and not args.milvus_keep:
            shutil.rmtree(tmp, ignore_errors=True)
        if server and not args.milvus_keep:
            _drop_server_gallery(uri)
    log(f"{what} inserts: {insert_s:.0f} s for {total} rows")
    return rows


def _drop_server_gallery(uri: str) -> None:
    """Drop a server gallery's two collections (``Gallery.delete`` is for local galleries)."""
    from pymilvus import MilvusClient

    from npcface.gallery import parse_gallery_uri

    loc = parse_gallery_uri(uri)
    client = MilvusClient(uri=loc.client_uri)
    for name in (str(loc.collection), f"{loc.collection}__meta"):
        if client.has_collection(name):
            client.drop_collection(name)
    client.close()


def _server_rss(uri: str) -> float:
    """Resident bytes of the processes listening on ``uri``'s port, with their children
    (``milvus-server`` runs Milvus as the launcher's child), read from ``/proc``; NaN if none
    is found on this machine."""
    from urllib.parse import urlsplit

    port = urlsplit(uri).port or 19530
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    parents: dict[int, int] = {}
    owners: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if inodes & {os.readlink(fd) for fd in (proc / "fd").iterdir()}:
                owners.add(int(proc.name))
    tree, grew = set(owners), True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError, ValueError):
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024
    return float(total) if total else float("nan")


def print_real(rows: list[RealRow], args) -> None:
    print(
        f"\nREAL FACES: LFW mates + Gaussian distractors, LFW probes; "
        f"threads={args.threads} faiss={faiss.__version__} "
        f"load-average-now={os.getloadavg()[0]:.1f} (shared machine: read the x-exact ratios)"
    )
    head = (
        f"{'N':>9} {'D':>4} {'index':<50} {'params':<22} {'build s':>7} {'B/vec':>6} "
        f"{'x exact 1q/batch':>16} {'rank-1':>7} {'rel':>6} {'TPIR@1e-2':>9} {'rel':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        speed = f"{r.x_single:.2g}/{r.x_batched:.2g}" if r.x_single == r.x_single else "1/1"
        print(
            f"{r.n:>9} {r.dim:>4} {r.index:<50} {r.params:<22} {r.build_s:>7.0f} "
            f"{r.bytes_per_vector:>6.0f} {speed:>16} {r.rank1:>7.4f} {r.rank1_rel:>6.3f} "
            f"{r.tpir:>9.4f} {r.tpir_rel:>6.3f}{'' if r.keeps else '  <0.99'}"
        )


def plot_real(rows: list[RealRow], path: str) -> None:
    """Rank-1 relative to exact search against single-query speed-up, one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({(r.n, r.dim) for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 5), squeeze=False)
    for ax, (n, dim) in zip(axes[0], sizes, strict=True):
        pts = [r for r in rows if (r.n, r.dim) == (n, dim) and r.x_single == r.x_single]
        for r in pts:
            ax.scatter(r.x_single, r.rank1_rel, color="C1" if r.index.startswith("auto") else "C0")
            ax.annotate(f"{r.index} {r.params}", (r.x_single, r.rank1_rel), fontsize=6)
        ax.axhline(0.99, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("single-query speed / exact search (same run)")
        ax.set_ylabel("rank-1 / exact search's")
        ax.set_title(f"real faces, {n:,} distractors x {dim}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_plan(indexes: list[str], n: int, dim: int, args, log):
    """{factory: [(label, params), ...]}: one build per factory; ``auto`` and an explicit
    sweep of the same factory share it."""
    plan: dict[str, list[tuple[str, dict[str, int]]]] = {}
    for spec in indexes:
        if spec == "none":  # exact search only (e.g. a run for the Milvus Lite column)
            continue
        if spec == "auto":
            factory = ix.auto_factory(n, dim)
            if factory == ix.FLAT_FACTORY:
                log("auto is exact search at this size: see the first row")
                continue
            plan.setdefault(factory, []).append(
                (f"auto={factory}", ix.default_search_params(factory, n, dim))
            )
        else:
            factory = ix.canonical_factory(spec, dim)
            for params in param_grid(factory, dim, n, args):
                if (factory, params) not in plan.get(factory, []):
                    plan.setdefault(factory, []).append((factory, params))
    return plan


def parse_count(text: str) -> int:
    """``100k``, ``1M``, ``1000000`` -> int."""
    text = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--mode",
        choices=("real", "synthetic"),
        default="real",
        help="real: LFW mates and probes + Gaussian distractors fitted to real embeddings "
        "(the figures that count); synthetic: spread-out clusters (the easy case)",
    )
    ap.add_argument(
        "--n",
        default="20000",
        help="templates (synthetic) or distractors (real); comma list, k/M suffixes",
    )
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument(
        "--real-cache",
        type=Path,
        default=default_real_cache(),
        help="cached real embeddings (npz; default $NPCFACE_BENCH_CACHE/real_embeddings/"
        "sface_128.npz, $NPCFACE_BENCH_CACHE defaulting to ../npcface_cache)",
    )
    ap.add_argument(
        "--build-real-cache",
        action="store_true",
        help="(re)compute the cached real embeddings from $NPCFACE_DATA (~23k images)",
    )
    ap.add_argument("--templates", type=int, default=2, help="synthetic: templates per identity")
    ap.add_argument("--noise", type=float, default=0.6, help="synthetic: template/query noise")
    ap.add_argument("--queries", type=int, default=1000, help="synthetic: queries")
    ap.add_argument(
        "--probes", type=int, default=0, help="real: search only this many probes (0: all 7,484)"
    )
    ap.add_argument(
        "--timing-queries", type=int, default=1000, help="real: probes in each timed batch"
    )
    ap.add_argument(
        "--single", type=int, default=300, help="queries timed one at a time (real: per round)"
    )
    ap.add_argument("--exact-single", type=int, default=10, help="real: exact queries per round")
    ap.add_argument("--rounds", type=int, default=3, help="real: alternating single-query rounds")
    ap.add_argument(
        "--single-budget", type=float, default=20.0, help="synthetic: seconds per single run"
    )
    ap.add_argument(
        "--index",
        action="append",
        help="factory string, 'auto' or 'none' (repeatable); default: auto, PQ{d/8}x4fs,RFlat, "
        "PQ{d/8}x4fs",
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
        help="synthetic: skip timing exact search one query at a time",
    )
    ap.add_argument(
        "--gallery",
        action="store_true",
        help="synthetic: also run the data through a real Gallery (SQLite + auto index)",
    )
    ap.add_argument(
        "--milvus-lite",
        action="append",
        help="real: also run the gallery through Milvus Lite with this index (repeatable; a "
        "Milvus index spec as Gallery.create(index=...) takes, e.g. FLAT, "
        "'HNSW:M=32,efConstruction=200', 'IVF_FLAT:nlist=1024'; pip install 'npcface[milvus]')",
    )
    ap.add_argument(
        "--milvus",
        help="real: also run the gallery through this Milvus server (milvus://host:port), with "
        "each --milvus-index; e.g. a local `milvus-server` (PyPI milvus) started as in "
        "docs/scale-out.md",
    )
    ap.add_argument(
        "--milvus-index",
        action="append",
        help="with --milvus: index spec (repeatable; default FLAT and 'HNSW:M=32,"
        "efConstruction=200', the auto tiers)",
    )
    ap.add_argument(
        "--milvus-consistency",
        default="Strong,Bounded",
        help="with --milvus: consistency levels whose speeds are measured (the gallery URI's "
        "?consistency=; Strong is the default)",
    )
    ap.add_argument(
        "--milvus-keep",
        type=Path,
        help="keep the Milvus Lite gallery in this folder and reuse it in later runs (inserts "
        "once; e.g. /work/npcface_cache/milvus_lite); with --milvus: keep the server's "
        "collection (this flag's folder is unused then)",
    )
    ap.add_argument("--milvus-ef", default="64,128,256,512", help="HNSW ef values (Milvus)")
    ap.add_argument("--milvus-nprobe", default="16,32,64,128", help="IVF nprobe values (Milvus)")
    ap.add_argument(
        "--milvus-single", type=int, default=30, help="Milvus queries timed one at a time per round"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--plot", help="real: save rank-1 vs speed-up to this PNG")
    args = ap.parse_args(argv)
    args.ef = [int(v) for v in args.ef.split(",") if v]
    args.nprobe = [int(v) for v in args.nprobe.split(",") if v]
    args.k_factor = [int(v) for v in args.k_factor.split(",") if v]
    args.milvus_ef = [int(v) for v in args.milvus_ef.split(",") if v]
    args.milvus_consistency = [v for v in args.milvus_consistency.split(",") if v]
    if args.milvus and not args.milvus_index:
        args.milvus_index = ["FLAT", "HNSW:M=32,efConstruction=200"]
    args.milvus_nprobe = [int(v) for v in args.milvus_nprobe.split(",") if v]
    sizes = [parse_count(v) for v in args.n.split(",") if v]
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
    if args.build_real_cache:
        build_real_cache(data_root(), args.real_cache, log)
    if args.mode == "synthetic":
        for n in sizes:
            args.n = n
            run_synthetic(args, indexes, log)
        return 0
    if not args.real_cache.is_file():
        log(f"{args.real_cache} not found: run with --build-real-cache (needs $NPCFACE_DATA)")
        return 2
    rows: list[RealRow] = []
    for n in sizes:
        rows += run_real(args, n, args.dim, indexes, log)
        gc.collect()
    print_real(rows, args)
    if args.json:
        with open(args.json, "w") as fh:
            out = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            json.dump({"args": out, "rows": [asdict(r) for r in rows]}, fh, indent=1)
    if args.plot:
        plot_real(rows, args.plot)
        log(f"plot: {args.plot}")
    return 0


def run_synthetic(args, indexes: list[str], log) -> None:
    """The easy case: spread-out synthetic identity clusters (see the module docstring)."""
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

    plan = build_plan(indexes, n, args.dim, args, log)

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
        gallery_lines = bench_gallery(xb, owner, queries, truth, args, log)
        print()
        print("\n".join(gallery_lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "exact_correct": correct, "rows": [asdict(r) for r in rows]},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    sys.exit(main())
