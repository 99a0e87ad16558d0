"""The FAISS side of a gallery: which index, how to build, tune, save and load it.

Every index is described completely by a FAISS ``index_factory`` string, stored with the
gallery and shown by ``info()``. Similarity is always the inner product
(``METRIC_INNER_PRODUCT``); for the cosine metric the gallery normalises vectors first.

Automatic choice (``index="auto"``), following FAISS's "Guidelines to choose an index" and
measured on real faces with ``bench/gallery_scale.py`` (LFW mates and probes of the default
recogniser among up to 10M distractors drawn from a Gaussian fitted to 23k real embeddings;
figures in ``README.md`` next to this file). The target: rank-1 and TPIR at FPIR 1e-2 within
1 % of exact search's at every size a tier covers, at the best speed that allows.

* fewer than :data:`FLAT_MAX_TEMPLATES` templates: exact search, ``IDMap2,Flat``. Exact
  answers, cheap deletion, nothing to train.
* from 50k, at every size: ``IDMap,PQ{d/4}x4fs,RFlat`` (:func:`scan_factory`): every vector
  is scanned as a 4-bit product-quantised code with SIMD ("fast scan", one 4-bit code per
  :data:`SCAN_DIMS_PER_CODE` dimensions: 16 B per vector at d=128) and the best
  ``k_factor`` x k candidates (:data:`REFINE_K_FACTOR`, growing with the gallery) are
  re-ranked with the exact vectors.

Real faces are far harder than spread-out synthetic clusters: mates score 0.3-0.9 and
strangers reach 0.75, so a person's other photo is often barely above the crowd. The former
tiers (8-dimension codes; from 500k an IVF1024 front probing a quarter of the lists; chosen
on synthetic clusters where they kept recall 0.997-1.0) kept only 0.84 of exact search's
rank-1 over 1M real-face distractors: the 8-byte codes lost the mate before re-ranking, and
the coarse partition dropped mates that sit far from their probe. Over 1M x 128 the
exhaustive scan kept 0.995 of exact search's rank-1 at 15x its single-query speed; the IVF
front, probing half the lists to keep 0.992, was no faster one query at a time (12x) and
only faster in batches, so ``auto`` no longer uses it (:data:`IVF_MIN_TEMPLATES`);
:func:`ivf_factory` remains as an explicit choice.

Deletion: IVF indexes and ``IDMap`` wrappers around flat code arrays (Flat, SQ, PQ) remove
vectors for real (``remove_ids``). HNSW (and anything else) cannot; there the gallery keeps
tombstones (dead ids filtered at search time) until ``compact()`` rebuilds the index.
``IDMap`` around an IVF index is never trusted with ``remove_ids``: FAISS compacts the id
map but not the inverted lists' internal ids, so later results would name the wrong ids.

GPU: with ``faiss-gpu`` installed and a GPU visible, searches run on a GPU copy when the
index type allows it (Flat, IVF with Flat/SQ/PQ codes; not HNSW, NSG, fast-scan PQ or refine
stages; ``k`` and ``nprobe`` <= 2048); the CPU index stays the one that is updated and saved.
``auto`` does not depend on the device (a gallery answers the same everywhere); on a GPU
machine ``index="Flat"`` gives exact search at GPU speed. The GPU path is not exercised in
this project's tests or benchmarks (no GPU here).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import GalleryCorruptError, GalleryError
from ..models import sha256_file
from .fsutil import atomic_write_bytes, fsync_dir, fsync_file

log = logging.getLogger(__name__)

METRIC = faiss.METRIC_INNER_PRODUCT
"""FAISS metric of every gallery index: larger inner product = more similar."""

AUTO = "auto"
FLAT_FACTORY = "IDMap2,Flat"

FLAT_MAX_TEMPLATES = 50_000
"""Up to this many templates ``auto`` searches exactly (``IDMap2,Flat``)."""

IVF_MIN_TEMPLATES: int | None = None
"""From this many templates ``auto`` would put an IVF front (:func:`ivf_factory`) before the
fast-scan codes; ``None``: never. On real faces over 1M x 128 it kept 0.992 of exact search's
rank-1 only by probing half the lists, and then answered single queries no faster than the
exhaustive scan (12x vs 15x exact search; 33x vs 26x in batches)."""

IVF_NLIST = 1024
"""Inverted lists of the ``auto`` IVF index."""

IVF_PROBE_SHARE = 2
"""Default ``nprobe`` = lists / this. Real-face mates sit far from their probes: probing a
quarter of 1024 lists lost 2 % of exact search's rank-1 over 1M distractors, half of them
kept 0.992 of it (see :func:`default_search_params`)."""

SCAN_DIMS_PER_CODE = 4
"""Dimensions per 4-bit fast-scan sub-quantizer of the ``auto`` indexes (``PQ32x4fs`` at
d=128, ``PQ128x4fs`` at 512). 8 (the former choice, 8 B per vector at d=128) lost the mate
before re-ranking on real faces; 2 kept everything at a third less speed."""

REFINE_K_FACTOR = ((200_000, 64), (2_000_000, 256))
"""(up to this many vectors, ``k_factor``) of refine indexes; :data:`REFINE_K_FACTOR_MAX`
beyond. Candidates re-ranked exactly per requested neighbour. On real faces
``PQ32x4fs,RFlat`` kept 0.996 of exact search's rank-1 at 64 over 100k distractors; over 1M
0.982 at 64 and 0.995 at 256; over 10M 0.972 at 256 and 0.996 at 1024. Re-ranking costs
little next to scanning the codes."""

REFINE_K_FACTOR_MAX = 1024
"""``k_factor`` of refine indexes above the last size of :data:`REFINE_K_FACTOR`."""

HNSW_EF_CONSTRUCTION = 40
"""``efConstruction`` for HNSW builds (FAISS's default). Higher values build a better graph
(higher recall at the same ``efSearch``) at a proportionally longer build."""

HNSW_EF_SEARCH = ((200_000, 256), (2_000_000, 1024))
"""(up to this many vectors, ``efSearch``) for explicitly chosen HNSW indexes; 2048 beyond.
On the benchmark's data HNSW32 (efConstruction 40) reached recall@1 0.9995 at 256 over 200k
(the lead's measurement) and 0.977 at 1024 over 1M x 512; real face embeddings, with more
structure, need less."""

GPU_MAX_K = 2048
"""FAISS GPU indexes answer at most this many neighbours per query."""
GPU_MAX_NPROBE = 2048
"""... and probe at most this many inverted lists."""

SIDECAR_NAME = "index.json"
SIDECAR_FORMAT = 1
_INDEX_FILE_RE = re.compile(r"^index-[0-9a-f]{16}\.faiss$")


class IndexFileError(GalleryCorruptError):
    """The saved index is missing, damaged or does not match the database (rebuildable)."""


# ------------------------------------------------------------------- structure
@dataclass(frozen=True)
class IndexTraits:
    """What the gallery needs to know about an index type.

    Attributes:
        factory: the complete factory string (with its ``IDMap``/``IDMap2`` wrapper if any).
        ivf: an inverted-file index (``nprobe`` applies).
        nlist: number of inverted lists (0 when not IVF).
        hnsw: uses an HNSW graph somewhere (not GPU-capable).
        removable: ``remove_ids`` is supported *and* trusted; otherwise tombstones are used.
        min_train: vectors needed to train it (0 when it needs no training).
        params: names of the search parameters it accepts (``efSearch``, ``nprobe``, ...).
    """

    factory: str
    ivf: bool
    nlist: int
    hnsw: bool
    removable: bool
    min_train: int
    params: tuple[str, ...]


def create_index(factory: str, dim: int) -> faiss.Index:
    """A new, empty (possibly untrained) index for a complete factory string."""
    try:
        index = faiss.index_factory(int(dim), factory, METRIC)
    except RuntimeError as exc:
        raise GalleryError(
            f"invalid FAISS factory string {factory!r} for dimension {dim}: "
            f"{_faiss_message(exc)}; examples: 'Flat', 'HNSW32,Flat', 'HNSW32,SQ8', "
            "'IVF4096_HNSW32,SQ8', 'PQ64'"
        ) from None
    for sub in _chain(index):
        if isinstance(sub, faiss.IndexHNSW):
            sub.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def canonical_factory(spec: str, dim: int) -> str:
    """The complete factory string for a user's ``spec`` (``auto`` is not accepted here).

    Indexes that take ids themselves (IVF) are used as given; others are wrapped in
    ``IDMap2`` when their vectors can be removed, else in ``IDMap`` (HNSW: the reverse map of
    ``IDMap2`` would cost memory for nothing).

    Raises:
        GalleryError: FAISS does not understand the string.
    """
    spec = spec.strip()
    if not spec or spec.lower() == AUTO:
        raise GalleryError("canonical_factory needs a FAISS factory string, not 'auto'")
    index = create_index(spec, dim)
    top = faiss.downcast_index(index)
    if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)) or _native_ids(top):
        return spec
    return f"IDMap2,{spec}" if _removable_codes(top) else f"IDMap,{spec}"


@lru_cache(maxsize=64)
def traits(factory: str, dim: int) -> IndexTraits:
    """Structure facts of a complete factory string (cached)."""
    index = create_index(factory, dim)
    chain = _chain(index)
    top = chain[0]
    ivf = faiss.try_extract_index_ivf(top)
    hnsw = any(isinstance(s, faiss.IndexHNSW) for s in chain) or "HNSW" in factory
    if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        # IDMap compacts its id map on removal; only flat code arrays renumber to match
        removable = ivf is None and _removable_codes(faiss.downcast_index(top.index))
    else:
        removable = _native_ids(top) and _probe_remove(index)
    ksub = 0
    for sub in chain:
        pq = getattr(sub, "pq", None)
        if pq is not None:
            ksub = max(ksub, int(pq.ksub))
    nlist = int(ivf.nlist) if ivf is not None else 0
    # FAISS's k-means wants >= 39 points per centroid; a scalar quantizer only needs ranges
    min_train = 0 if index.is_trained else (max(39 * nlist, 39 * ksub) or 1000)
    params = []
    if ivf is not None:
        params.append("nprobe")
    if hnsw:
        params.append("efSearch")
    if any(isinstance(sub, faiss.IndexRefine) for sub in chain):
        params.append("k_factor")
    return IndexTraits(
        factory=factory,
        ivf=ivf is not None,
        nlist=nlist,
        hnsw=hnsw,
        removable=removable,
        min_train=min_train,
        params=tuple(params),
    )


def _chain(index: faiss.Index) -> list[Any]:
    """The index and every index it wraps, outermost first, downcast."""
    out = []
    node = faiss.downcast_index(index)
    while node is not None:
        out.append(node)
        if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            node = faiss.downcast_index(node.index)
        elif isinstance(node, faiss.IndexRefine):
            node = faiss.downcast_index(node.base_index)
        elif isinstance(node, faiss.IndexHNSW):
            node = faiss.downcast_index(node.storage) if node.storage is not None else None
        elif isinstance(node, faiss.IndexIVF):
            out.append(faiss.downcast_index(node.quantizer))
            node = None
        else:
            node = None
    return out


def _native_ids(index: faiss.Index) -> bool:
    """An IVF index, possibly behind pre-transforms: it stores the ids it is given."""
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexPreTransform):
        node = faiss.downcast_index(node.index)
    return isinstance(node, faiss.IndexIVF)


def _removable_codes(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexFlatCodes) and _probe_remove(index)


def _probe_remove(index: faiss.Index) -> bool:
    try:
        index.remove_ids(np.zeros(0, dtype=np.int64))
    except RuntimeError:
        return False
    return True


# ----------------------------------------------------------------- the choice
def fastscan_m(dim: int) -> int:
    """Sub-quantizers of the 4-bit fast-scan PQ for ``dim``: :data:`SCAN_DIMS_PER_CODE`
    dimensions each when ``dim`` allows it (``PQ32x4fs`` at 128, ``PQ128x4fs`` at 512), else
    fewer (down to 1)."""
    per = SCAN_DIMS_PER_CODE
    while per > 1 and dim % per:
        per //= 2
    return dim // per


def scan_factory(dim: int) -> str:
    """Exhaustive fast-scan PQ with exact re-ranking: ``auto`` from
    :data:`FLAT_MAX_TEMPLATES` templates."""
    return f"IDMap,PQ{fastscan_m(dim)}x4fs,RFlat"


def ivf_factory(dim: int) -> str:
    """The same codes behind an IVF front (``auto`` from :data:`IVF_MIN_TEMPLATES` if set):
    faster in batches, not one query at a time, at real faces' recall."""
    return f"IDMap,IVF{IVF_NLIST},PQ{fastscan_m(dim)}x4fs,RFlat"


def auto_tiers(dim: int) -> tuple[tuple[int, str], ...]:
    """Every tier of ``index="auto"`` for ``dim`` dimensions, smallest first, as
    ``(from this many templates, factory)``."""
    tiers = ((0, FLAT_FACTORY), (FLAT_MAX_TEMPLATES, scan_factory(dim)))
    if IVF_MIN_TEMPLATES is not None:
        tiers += ((IVF_MIN_TEMPLATES, ivf_factory(dim)),)
    return tiers


def auto_factory(n: int, dim: int) -> str:
    """The factory ``index="auto"`` uses for a gallery of ``n`` templates of ``dim`` dims."""
    factory = FLAT_FACTORY
    for start, tier_factory in auto_tiers(dim):
        if n >= start:
            factory = tier_factory
    return factory


def target_factory(spec: str, n: int, dim: int) -> str:
    """The factory a gallery with index spec ``spec`` should use at ``n`` templates.

    ``auto`` follows :func:`auto_factory`. An explicit factory is used as soon as there are
    enough vectors to train it; until then the gallery searches exactly with ``IDMap2,Flat``.
    """
    if spec == AUTO:
        return auto_factory(n, dim)
    factory = canonical_factory(spec, dim)
    if n < traits(factory, dim).min_train:
        return FLAT_FACTORY
    return factory


def tier(factory: str) -> int:
    """0 exact, 1 exhaustive approximate, 2 IVF: ``auto`` galleries only move up by
    themselves (``compact()`` may move them down)."""
    if factory == FLAT_FACTORY:
        return 0
    return 2 if "IVF" in factory else 1


def default_search_params(factory: str, n: int, dim: int) -> dict[str, int]:
    """Default search parameters by index type and size (see the module docstring).

    Args:
        factory: complete factory string.
        n: number of vectors in the index.
        dim: dimension.

    Returns:
        ``{"efSearch": ...}`` for HNSW, ``{"nprobe": ...}`` for IVF (plus ``efSearch`` for
        an HNSW coarse quantizer), ``{"k_factor": ...}`` for refine indexes, ``{}`` for
        exact indexes.
    """
    t = traits(factory, dim)
    params: dict[str, int] = {}
    if t.ivf:
        # real-face mates sit far from their probes: the coarse partition loses them unless
        # a large share of the lists is probed (at most FAISS's GPU limit)
        params["nprobe"] = int(min(t.nlist, GPU_MAX_NPROBE, max(32, t.nlist // IVF_PROBE_SHARE)))
        if t.hnsw:
            params["efSearch"] = int(max(64, 2 * params["nprobe"]))
    elif t.hnsw:
        ef = 2048
        for limit, value in HNSW_EF_SEARCH:
            if n <= limit:
                ef = value
                break
        params["efSearch"] = ef
    if "k_factor" in t.params:
        params["k_factor"] = REFINE_K_FACTOR_MAX
        for limit, value in REFINE_K_FACTOR:
            if n <= limit:
                params["k_factor"] = value
                break
    return params


def apply_search_params(index: faiss.Index, params: dict[str, float]) -> None:
    """Set search parameters through ``faiss.ParameterSpace``.

    Raises:
        GalleryError: a parameter does not apply to this index type.
    """
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if name == "k_factor":  # ParameterSpace does not reach a refine stage behind IDMap
            refines = [s for s in _chain(index) if isinstance(s, faiss.IndexRefine)]
            if not refines:
                raise GalleryError("search parameter 'k_factor' applies to refine indexes only")
            for refine in refines:
                refine.k_factor = float(value)
            continue
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError:
            raise GalleryError(
                f"search parameter {name!r} does not apply to this index "
                f"({type(faiss.downcast_index(index)).__name__}); HNSW takes efSearch, IVF "
                "takes nprobe"
            ) from None


# ---------------------------------------------------------------- build, train
def train_index(index: faiss.Index, sample: np.ndarray) -> None:
    """Train ``index`` on ``sample`` (float32 rows) if it needs training."""
    if index.is_trained:
        return
    t0 = time.perf_counter()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    log.info("trained index on %d vectors in %.1f s", len(sample), time.perf_counter() - t0)


def training_sample_size(factory: str, dim: int, n: int) -> int:
    """How many stored vectors to train on: enough for FAISS's k-means, at most ``n``."""
    t = traits(factory, dim)
    if t.min_train == 0:
        return 0
    want = max(t.min_train, 64 * max(t.nlist, 256), 50_000)
    return int(min(n, want, 1_000_000))


def index_ids(index: faiss.Index) -> np.ndarray:
    """Every id stored in ``index`` (int64, unordered; tombstoned ids included)."""
    top = faiss.downcast_index(index)
    if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(top.id_map).astype(np.int64)
    ivf = faiss.try_extract_index_ivf(top)
    if ivf is None:
        raise GalleryError(f"cannot list the ids of a {type(top).__name__} index")
    invlists = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def serialized_size(index: faiss.Index) -> int:
    """Bytes of the serialised index (close to its memory use)."""
    return int(faiss.serialize_index(index).size)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run FAISS with one OpenMP thread inside the block (restored afterwards).

    FAISS parallelises a search over its queries; for one query the extra threads only add
    start-up and spin-wait cost (3-4x slower single-query HNSW on a loaded 2-core machine).
    """
    before = faiss.omp_get_max_threads()
    if before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ----------------------------------------------------------------------- GPU
@dataclass(frozen=True)
class GpuPlan:
    """Whether a search runs on the GPU, and why (or why not)."""

    use: bool
    reason: str


def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with ``faiss-cpu``)."""
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # pragma: no cover - very old faiss
        return 0


def gpu_plan(factory: str, *, num_gpus: int, k: int, nprobe: int | None = None) -> GpuPlan:
    """Decide whether a search may run on the GPU. Pure: testable without a GPU.

    Args:
        factory: complete factory string of the index.
        num_gpus: GPUs visible to FAISS.
        k: neighbours requested per query.
        nprobe: inverted lists probed (IVF only).

    Returns:
        The decision with a one-line reason.
    """
    if num_gpus <= 0:
        return GpuPlan(False, "no GPU visible to FAISS (faiss-cpu, or no device)")
    if "HNSW" in factory or "NSG" in factory:
        return GpuPlan(False, "HNSW/NSG indexes have no GPU implementation")
    if "x4fs" in factory:
        return GpuPlan(False, "fast-scan PQ (x4fs) indexes have no GPU implementation")
    if "RFlat" in factory or "Refine" in factory:
        return GpuPlan(False, "refine stages are not moved to the GPU by FAISS's cloner")
    if k > GPU_MAX_K:
        return GpuPlan(False, f"k={k} exceeds the GPU limit of {GPU_MAX_K}")
    if nprobe is not None and nprobe > GPU_MAX_NPROBE:
        return GpuPlan(False, f"nprobe={nprobe} exceeds the GPU limit of {GPU_MAX_NPROBE}")
    return GpuPlan(True, f"{num_gpus} GPU(s) available")


def clone_to_gpu(index: faiss.Index) -> faiss.Index | None:  # pragma: no cover - needs a GPU
    """A GPU copy of ``index`` on every visible GPU, or ``None`` if FAISS cannot make one."""
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as exc:
        log.warning("cannot move the index to the GPU (%s); searching on the CPU", exc)
        return None


# ---------------------------------------------------------------- save, load
@dataclass(frozen=True)
class IndexSnapshot:
    """What the sidecar ``index.json`` says about the saved index file.

    Attributes:
        file: name of the index file in the gallery directory.
        sha256: SHA-256 of that file, checked before FAISS reads it.
        size: its size in bytes.
        factory: the complete factory string of the saved index.
        dim: vector dimension.
        ntotal: vectors in the saved index (tombstones included).
        last_template_id: every template with a smaller or equal id was added to it.
        deletion_seq: every deletion up to this sequence number was applied to it.
        saved: UNIX time of the save.
        faiss_version: FAISS version that wrote it.
    """

    file: str
    sha256: str
    size: int
    factory: str
    dim: int
    ntotal: int
    last_template_id: int
    deletion_seq: int
    saved: float
    faiss_version: str

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["format"] = SIDECAR_FORMAT
        return json.dumps(d, indent=1, sort_keys=True)


TMP_PREFIX = ".index.tmp-"
"""An index file being written by :func:`save_index` (a crash can leave one behind)."""


def remove_partial_saves(directory: str | os.PathLike[str]) -> None:
    """Delete index files a writer that died left half-written (the caller holds the writer
    lock, so no other process is writing one): a cache copy of vectors that may have been
    removed since."""
    for tmp in Path(directory).glob(f"{TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)


def save_index(
    index: faiss.Index,
    directory: str | os.PathLike[str],
    *,
    factory: str,
    last_template_id: int,
    deletion_seq: int,
) -> IndexSnapshot:
    """Save ``index`` atomically next to its sidecar.

    The index is written to a temporary file, flushed to disk, named after its SHA-256 and
    renamed into place; then the sidecar is replaced atomically. The sidecar replacement is
    the commit: a crash at any point leaves either the old pair or the new pair. Older index
    files are deleted afterwards.

    Args:
        index: a CPU index.
        directory: the gallery directory.
        factory: complete factory string of ``index``.
        last_template_id: highest template id the index covers.
        deletion_seq: highest deletion sequence number the index reflects.

    Returns:
        The snapshot written to the sidecar.
    """
    directory = Path(directory)
    tmp = directory / f"{TMP_PREFIX}{os.getpid()}"
    t0 = time.perf_counter()
    faiss.write_index(index, str(tmp))
    fsync_file(tmp)
    digest = sha256_file(tmp)
    name = f"index-{digest[:16]}.faiss"
    os.replace(tmp, directory / name)
    fsync_dir(directory)
    snap = IndexSnapshot(
        file=name,
        sha256=digest,
        size=(directory / name).stat().st_size,
        factory=factory,
        dim=int(index.d),
        ntotal=int(index.ntotal),
        last_template_id=int(last_template_id),
        deletion_seq=int(deletion_seq),
        saved=time.time(),
        faiss_version=faiss.__version__,
    )
    atomic_write_bytes(directory / SIDECAR_NAME, snap.to_json().encode())
    for old in directory.glob("index-*.faiss"):
        if old.name != name:
            old.unlink(missing_ok=True)
    log.info(
        "saved index %s (%d vectors, %.1f MB) in %.1f s",
        name,
        snap.ntotal,
        snap.size / 1e6,
        time.perf_counter() - t0,
    )
    return snap


def read_snapshot(directory: str | os.PathLike[str]) -> IndexSnapshot:
    """Parse and check the sidecar.

    Raises:
        IndexFileError: missing, unreadable or malformed.
    """
    path = Path(directory) / SIDECAR_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no saved index") from None
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path}: unreadable index sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise IndexFileError(f"{path}: unknown index sidecar format")
    try:
        snap = IndexSnapshot(
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            factory=str(data["factory"]),
            dim=int(data["dim"]),
            ntotal=int(data["ntotal"]),
            last_template_id=int(data["last_template_id"]),
            deletion_seq=int(data["deletion_seq"]),
            saved=float(data["saved"]),
            faiss_version=str(data["faiss_version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFileError(f"{path}: malformed index sidecar ({exc})") from None
    if not _INDEX_FILE_RE.match(snap.file):
        raise IndexFileError(f"{path}: index file name {snap.file!r} is not one npcface writes")
    return snap


def load_index(directory: str | os.PathLike[str], *, dim: int) -> tuple[faiss.Index, IndexSnapshot]:
    """Load the saved index after checking it against its sidecar.

    The file's size and SHA-256 are verified *before* FAISS reads it (FAISS may crash on a
    damaged file rather than raise).

    Raises:
        IndexFileError: sidecar or index missing, damaged, or of another dimension.
    """
    directory = Path(directory)
    snap = read_snapshot(directory)
    path = directory / snap.file
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexFileError(f"{path}: index file named by {SIDECAR_NAME} is missing") from None
    if size != snap.size:
        raise IndexFileError(
            f"{path}: index file is {size} bytes, expected {snap.size} (truncated?)"
        )
    if sha256_file(path) != snap.sha256:
        raise IndexFileError(f"{path}: index file does not match its SHA-256 (damaged)")
    if snap.dim != dim:
        raise IndexFileError(f"{path}: index has dimension {snap.dim}, the gallery {dim}")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFileError(f"{path}: FAISS cannot read it ({_faiss_message(exc)})") from None
    if index.d != dim or index.ntotal != snap.ntotal or index.metric_type != METRIC:
        raise IndexFileError(f"{path}: index contents disagree with {SIDECAR_NAME}")
    return index, snap


def _faiss_message(exc: BaseException) -> str:
    """The useful part of a FAISS RuntimeError (they carry C++ signatures and file:line)."""
    text = str(exc).strip()
    m = re.search(r" at \S+:\d+: (.*)", text)
    return (m.group(1) if m else text).strip()[:300]
