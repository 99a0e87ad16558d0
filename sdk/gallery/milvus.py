"""A gallery stored in Milvus: a server or cluster, or Milvus Lite in one local file.

:class:`MilvusBackend` is a :class:`~npcface.gallery.backend.Backend`: ``Gallery.create`` /
``Gallery.open`` of a ``milvus://`` or ``milvus-lite://`` address (see
:mod:`npcface.gallery.uri`) put it behind the same :class:`~npcface.gallery.Gallery` facade
as the local gallery, which checks arguments and vectors, serialises calls and keeps the
closed/read-only state for both. Layout of gallery ``NAME``:

* collection ``NAME``: one row per template: ``tid`` (INT64, assigned by Milvus),
  ``identity`` (VARCHAR), ``source`` and ``content_hash`` (VARCHAR), ``vec`` (FLOAT_VECTOR);
* collection ``NAME__meta``: one row per identity (its name, metadata as JSON, enrolment
  order) and one row of gallery settings (dimension, metric, index, embedding model).

Writes are durable when they return (Milvus acknowledges after its write-ahead log); reads
use ``Strong`` consistency by default, so a search right after ``add`` sees the new
templates. Milvus has no multi-row transactions: a process killed inside ``add_many`` may
leave part of that batch; bulk enrolment re-run with the same files fills the rest in
(content hashes). Deletion (by identity, or by template id) is real, no tombstones.

Search over-fetches templates, collapses them by identity keeping each identity's best
template, and searches deeper when too few distinct identities came back, like the local
gallery (Milvus's own ``group_by`` is not used: Milvus Lite over-fetches a fixed 10x and
would miss people behind an identity with many templates).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryError, MissingExtraError
from ..results import Match
from .backend import GalleryInfo
from .uri import MILVUS_LITE, TOKEN_ENV, GalleryLocation, parse_gallery_uri

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
METRICS = ("cosine", "ip")
AUTO = "auto"
FLAT_MAX_TEMPLATES = 50_000
"""Below this many templates ``auto`` searches a Milvus server exactly (``FLAT``), as the
local gallery; HNSW (:data:`HNSW_BUILD`, :data:`HNSW_EF`) from there on."""
LITE_FLAT_MAX_TEMPLATES: int | None = None
"""Milvus Lite: ``None`` = exact (``FLAT``) at every size. Measured on real faces
(``bench/gallery_scale.py --mode real``, Milvus Lite column, see ``sdk/gallery/README.md``):
FLAT keeps 1.000 of exact search's rank-1 at 1M and answers ~1 query/s one at a time, as fast
as ``IVF_FLAT`` there (which keeps 0.99 only with half of its lists probed); HNSW keeps 0.992
at ef 256 but takes ~2 min per 100k-row segment to build on 2 cores and answered single
queries only 1.6x faster than FLAT at 100k (batches slower)."""
HNSW_BUILD = {"M": 32, "efConstruction": 200}
"""Graph of the ``auto`` HNSW index (full-precision vectors: nothing to refine)."""
HNSW_EF = ((200_000, 256), (2_000_000, 512))
"""(up to this many templates, ``ef``) for HNSW searches on a server; 1024 beyond. On real
faces an M=32, efConstruction=200 graph of 100k templates (Milvus Lite's segment) kept 0.929 /
0.973 / 0.992 / 0.998 of exact search's rank-1 at ef 64 / 128 / 256 / 512; a server's
segments hold up to ~2M templates at d = 128 (larger graphs need a larger ``ef``, not
measured here), hence the growth."""
LITE_HNSW_EF = 256
"""``ef`` of an HNSW index chosen explicitly on Milvus Lite (its graphs never exceed one
100k-row segment; 0.992 of exact search's rank-1 there)."""
MAX_TOPK = 16_384
"""Milvus answers at most this many hits per query."""
CONNECT_TIMEOUT = 60.0
"""Seconds to wait for Milvus to answer the first call (pymilvus's default, 10 s, was not
always enough for an embedded Milvus Lite on a busy 2-core machine)."""
MAX_NAME_LENGTH = 1024
MAX_SOURCE_LENGTH = 4096
INSERT_BATCH = 5_000
INDEX_TYPES = frozenset(
    {
        "FLAT",
        "IVF_FLAT",
        "IVF_SQ8",
        "IVF_PQ",
        "IVF_RABITQ",
        "HNSW",
        "HNSW_SQ",
        "HNSW_PQ",
        "HNSW_PRQ",
        "SCANN",
        "DISKANN",
        "AUTOINDEX",
    }
)
LITE_INDEX_TYPES = frozenset({"FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ", "AUTOINDEX"})
"""What Milvus Lite builds; it accepts the others but searches them by brute force."""
_SETTINGS_KEY = 0
_DUMMY = [1.0, 0.0]  # Milvus wants a vector in every collection; the meta rows carry this one


@dataclass(frozen=True)
class MilvusIndex:
    """A Milvus index choice: its type, build parameters and search parameters."""

    index_type: str
    build: dict[str, Any]

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.build.items()))
        return f"{self.index_type}({args})" if args else self.index_type


def parse_index(spec: str, lite: bool = False) -> MilvusIndex | None:
    """``auto`` -> ``None``; else ``TYPE`` or ``TYPE:key=value,...`` (Milvus build params).

    Examples: ``FLAT``, ``HNSW:M=16,efConstruction=100``, ``IVF_PQ:nlist=4096,m=32``,
    ``HNSW_SQ:sq_type=SQ8,refine=true,refine_type=FP32``.

    Raises:
        GalleryError: unknown type, malformed parameters, or a type Milvus Lite cannot build.
    """
    text = str(spec).strip()
    if text.lower() == AUTO:
        return None
    kind, _, rest = text.partition(":")
    kind = kind.strip().upper()
    if kind not in INDEX_TYPES:
        raise GalleryError(
            f"unknown Milvus index {kind!r}; use auto or one of {', '.join(sorted(INDEX_TYPES))}"
        )
    if lite and kind not in LITE_INDEX_TYPES:
        raise GalleryError(
            f"Milvus Lite cannot build {kind}; use one of {', '.join(sorted(LITE_INDEX_TYPES))} "
            "(or a Milvus server)"
        )
    build: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GalleryError(f"index {text!r}: expected key=value, got {part!r}")
        build[key.strip()] = _scalar(value.strip())
    return MilvusIndex(kind, build)


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def auto_index(n: int, lite: bool = False) -> MilvusIndex:
    """The index ``auto`` uses for ``n`` templates: on a server exact below 50k and HNSW
    above; on Milvus Lite exact at every size (see :data:`LITE_FLAT_MAX_TEMPLATES`)."""
    limit = LITE_FLAT_MAX_TEMPLATES if lite else FLAT_MAX_TEMPLATES
    if limit is None or n < limit:
        return MilvusIndex("FLAT", {})
    return MilvusIndex("HNSW", dict(HNSW_BUILD))


def _hnsw_ef(n: int, lite: bool = False) -> int:
    """Default HNSW ``ef`` for ``n`` templates (see :data:`HNSW_EF`, :data:`LITE_HNSW_EF`)."""
    if lite:
        return LITE_HNSW_EF
    for upto, ef in HNSW_EF:
        if n <= upto:
            return ef
    return 1024


def _ivf_nprobe(nlist: int) -> int:
    """Default ``nprobe`` of an IVF index with ``nlist`` lists: half of them (on real faces
    ``IVF_FLAT`` nlist=1024 kept 0.952 of exact search's rank-1 at nprobe 128, 1.000 at 512)."""
    return max(1, nlist // 2)


class MilvusBackend:
    """A gallery's storage and search in Milvus: the :class:`~npcface.gallery.backend.Backend`
    behind ``Gallery.create/open`` of a ``milvus://`` or ``milvus-lite://`` address.

    The :class:`~npcface.gallery.Gallery` facade checks arguments and vectors, normalises
    them, serialises calls and keeps the closed/read-only state; this class only talks to
    Milvus. Unlike the local gallery there is no writer lock: a Milvus server accepts
    several writers, and their enrolments interleave (``readonly`` only guards this handle).

    Example::

        with Gallery.create("milvus-lite:///tmp/faces.db", dim=128) as g:
            g.add("alice", alice_embeddings, metadata={"employee": 17})
            g.identify(query, threshold=0.4)
    """

    def __init__(
        self,
        location: GalleryLocation,
        client: Any,
        settings: dict[str, Any],
        readonly: bool,
        consistency: str,
    ) -> None:
        """Internal: use :meth:`create` or :meth:`open` (through ``Gallery.create/open``)."""
        self.loc = location
        self.location = location.uri
        self._client = client
        self._name = str(location.collection)
        self._meta_name = f"{self._name}__meta"
        self._settings = settings
        self.readonly = readonly
        self._consistency = consistency
        self._released = False
        self.dim = int(settings["dim"])
        self.metric = str(settings["metric"])
        self._n_templates = 0
        self._n_identities = 0
        self._index = _index_from_settings(settings)
        self._recount()

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        location: str,
        *,
        dim: int,
        metric: str = "cosine",
        index: str = AUTO,
        dtype: str = "float32",
        model: str | None = None,
        search_params: Mapping[str, int] | None = None,
        consistency: str = "Strong",
    ) -> MilvusBackend:
        """Create an empty gallery (two collections) at a ``milvus://`` or
        ``milvus-lite://`` address (``Gallery.create`` checks ``dim``, ``metric``, ``model``).

        Args:
            location: where (see :mod:`npcface.gallery.uri`).
            dim: embedding dimension (>= 2 for Milvus).
            metric: ``cosine`` (normalised, inner product) or ``ip``.
            index: ``auto`` (FLAT below 50k templates, then HNSW, switched as the gallery
                grows; see :func:`auto_index`) or an explicit Milvus index, e.g.
                ``"IVF_PQ:nlist=4096,m=32"`` (kept as given; see :func:`parse_index`).
            dtype: only ``float32`` (Milvus keeps full-precision vectors; compress with the
                index instead, e.g. ``HNSW_SQ`` or ``IVF_PQ``).
            model: the embedding model's name (checked by the recogniser integration).
            search_params: Milvus search parameters to use instead of the defaults
                (``ef`` for HNSW, ``nprobe`` for IVF).
            consistency: Milvus consistency level of reads: ``Strong`` (default: a search
                sees every acknowledged write), ``Bounded``, ``Session`` or ``Eventually``.

        Raises:
            GalleryError: bad settings, a gallery already exists there, or Milvus is
                unreachable.
            MissingExtraError: pymilvus (or milvus-lite) is not installed.
        """
        loc = parse_gallery_uri(location)
        uri = loc.uri
        if int(dim) < 2:
            raise GalleryError(f"dim must be an integer >= 2 for Milvus, got {dim!r}")
        if dtype != "float32":
            raise GalleryError(
                f"{uri}: Milvus galleries store float32 vectors (dtype {dtype!r} is for local "
                "galleries); compress with the index, e.g. index='HNSW_SQ' or 'IVF_PQ'"
            )
        chosen = parse_index(index, lite=loc.kind == MILVUS_LITE)
        spec = (
            AUTO
            if chosen is None
            else f"{chosen.index_type}:" + ",".join(f"{k}={v}" for k, v in chosen.build.items())
        )
        params = _check_search_params(search_params or {}, {})
        _check_consistency(consistency)
        client = _connect(loc)
        try:
            name = str(loc.collection)
            if client.has_collection(name) or client.has_collection(f"{name}__meta"):
                raise GalleryError(
                    f"{uri}: a gallery (or collection {name!r}) already exists there; open it "
                    "with Gallery.open()"
                )
            first = chosen or auto_index(0, lite=loc.kind == MILVUS_LITE)
            settings = {
                "format": FORMAT_VERSION,
                "dim": int(dim),
                "metric": metric,
                "dtype": "float32",
                "index_spec": spec,
                "index": {"type": first.index_type, "build": first.build},
                "search_params": params,
                "model": model,
                "created": time.time(),
            }
            _create_collections(client, name, int(dim), first, consistency)
            client.upsert(f"{name}__meta", [_settings_row(settings)])
        except GalleryError:
            _disconnect(loc, client)
            raise
        except Exception as exc:
            _disconnect(loc, client)
            raise GalleryError(f"{uri}: cannot create the gallery: {exc}") from exc
        return cls(loc, client, settings, False, consistency)

    @classmethod
    def open(
        cls,
        location: str,
        *,
        readonly: bool = False,
        on_bad_index: str = "rebuild",
        consistency: str = "Strong",
    ) -> MilvusBackend:
        """Open an existing Milvus gallery.

        Args:
            location: its address.
            readonly: refuse writes from this handle (Milvus itself does not lock).
            on_bad_index: ignored (Milvus keeps its index with its rows).
            consistency: as in :meth:`create`.

        Raises:
            GalleryError: no gallery there, it was made by a newer npcface, or Milvus is
                unreachable.
        """
        loc = parse_gallery_uri(location)
        uri = loc.uri
        _check_consistency(consistency)
        if loc.kind == MILVUS_LITE and not Path(str(loc.path)).exists():
            raise GalleryError(
                f"{uri}: no gallery here ({loc.path} does not exist); create one with "
                "Gallery.create(uri, dim)"
            )
        client = _connect(loc)
        try:
            name = str(loc.collection)
            if not client.has_collection(f"{name}__meta") or not client.has_collection(name):
                raise GalleryError(
                    f"{uri}: no gallery here (no collections {name!r} and {name}__meta); "
                    "create one with Gallery.create(uri, dim)"
                )
            for coll in (name, f"{name}__meta"):
                client.load_collection(coll)
            rows = client.query(
                f"{name}__meta",
                filter=f"key == {_SETTINGS_KEY}",
                output_fields=["value"],
                consistency_level=consistency,
            )
            if not rows:
                raise GalleryError(f"{uri}: collection {name!r} is not an npcface gallery")
            # an upsert is a delete + insert: never trust the order of what comes back
            settings = dict(max(rows, key=lambda r: int(r["value"].get("revision", 0)))["value"])
            if int(settings.get("format", 0)) > FORMAT_VERSION:
                raise GalleryError(
                    f"{uri}: gallery format {settings.get('format')} is newer than this "
                    f"npcface reads ({FORMAT_VERSION}); upgrade npcface"
                )
        except GalleryError:
            _disconnect(loc, client)
            raise
        except Exception as exc:
            _disconnect(loc, client)
            raise GalleryError(f"{uri}: cannot open the gallery: {exc}") from exc
        return cls(loc, client, settings, bool(readonly), consistency)

    @staticmethod
    def exists(uri: str) -> bool:
        """Whether a gallery exists at ``uri`` (connects to the server; a missing Milvus
        Lite file is simply ``False``)."""
        loc = parse_gallery_uri(uri)
        if loc.kind == MILVUS_LITE and not Path(str(loc.path)).exists():
            return False
        client = _connect(loc)
        try:
            name = str(loc.collection)
            return bool(client.has_collection(name) and client.has_collection(f"{name}__meta"))
        finally:
            _disconnect(loc, client)

    def reading(self) -> AbstractContextManager[None]:
        """Nothing to catch up: reads use the consistency level (``Strong``: every write
        acknowledged before the read began is seen)."""
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- writes
    def add(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str | None] | None,
        content_hashes: Sequence[str | None] | None,
        metadata: Mapping[str, Mapping[str, Any]] | None,
    ) -> list[int]:
        """Insert templates (rows checked and normalised by the facade); the ids Milvus
        assigned, in input order, durable when this returns."""
        n = len(vectors)
        names = list(names)
        if any(len(v) > MAX_NAME_LENGTH for v in names):
            raise GalleryError(f"identity name longer than {MAX_NAME_LENGTH} characters")
        for who, meta in (metadata or {}).items():
            try:
                json.dumps(dict(meta))
            except (TypeError, ValueError) as exc:
                raise GalleryError(
                    f"metadata of identity {who!r} must be JSON-serialisable: {exc}"
                ) from None
        sources = _column(sources, n, "sources", MAX_SOURCE_LENGTH)
        hashes = _column(content_hashes, n, "content_hashes", 128)
        self._upsert_identities(names, metadata or {})
        ids: list[int] = []
        for start in range(0, n, INSERT_BATCH):
            stop = min(n, start + INSERT_BATCH)
            rows = [
                {
                    "identity": names[i],
                    "source": sources[i],
                    "content_hash": hashes[i],
                    "vec": vectors[i],
                }
                for i in range(start, stop)
            ]
            ids.extend(int(i) for i in self._client.insert(self._name, rows)["ids"])
        self._n_templates += n
        self._maybe_upgrade()
        return ids

    def _upsert_identities(
        self, names: list[str], metadata: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Create the identity rows of new names; merge ``metadata`` into theirs."""
        unique = list(dict.fromkeys(names))
        known = self._identity_rows(unique)
        now = time.time_ns()
        rows = []
        for j, name in enumerate(unique):
            row = known.get(name)
            meta = dict(metadata.get(name) or {})
            if row is None:
                rows.append(_identity_row(name, meta, now + j))
            elif meta:
                merged = {**dict(row["value"]), **meta}
                if merged != row["value"]:
                    rows.append(_identity_row(name, merged, int(row["seq"])))
        if rows:
            self._client.upsert(self._meta_name, rows)
            self._n_identities += sum(1 for n in unique if n not in known)

    def _maybe_upgrade(self) -> None:
        """``auto`` galleries: switch FLAT -> the next tier once they pass its threshold."""
        if self._settings.get("index_spec") != AUTO:
            return
        target = auto_index(self._n_templates, self._lite)
        if target.index_type == self._index.index_type:
            return
        log.info(
            "%s: %d templates: switching index %s -> %s",
            self.location,
            self._n_templates,
            self._index.describe(),
            target.describe(),
        )
        self._build_index(target)

    def _build_index(self, target: MilvusIndex) -> None:
        t0 = time.perf_counter()
        self._client.release_collection(self._name)
        self._client.drop_index(self._name, "vec")
        self._client.create_index(self._name, _index_params(self._client, target))
        self._client.load_collection(self._name)
        self._index = target
        self._settings["index"] = {"type": target.index_type, "build": target.build}
        self._client.upsert(self._meta_name, [_settings_row(self._settings)])
        log.info(
            "%s: built %s in %.1f s", self.location, target.describe(), time.perf_counter() - t0
        )

    def remove_identities(self, names: Sequence[str]) -> int:
        """Delete identities completely (unknown names raise before anything is deleted)."""
        names = list(dict.fromkeys(names))
        known = self._identity_rows(names)
        missing = [n for n in names if n not in known]
        if missing:
            raise GalleryError(f"{self.location}: no identity named {missing[0]!r}")
        expr = f"identity in [{', '.join(_quote(n) for n in names)}]"
        count = self._count(self._name, expr)
        self._client.delete(self._name, filter=expr)
        self._client.delete(self._meta_name, ids=[_identity_key(n) for n in names])
        self._recount()
        return count

    def remove_templates(self, template_ids: Sequence[int]) -> int:
        """Delete templates by id; an identity left with none is deleted too."""
        ids = sorted({int(t) for t in template_ids})
        if not ids:
            return 0
        rows = self._client.query(
            self._name,
            filter=f"tid in [{', '.join(str(t) for t in ids)}]",
            output_fields=["tid", "identity"],
            consistency_level=self._consistency,
        )
        if not rows:
            return 0
        self._client.delete(self._name, ids=[int(r["tid"]) for r in rows])
        owners = sorted({r["identity"] for r in rows})
        left = self._client.query(
            self._name,
            filter=f"identity in [{', '.join(_quote(n) for n in owners)}]",
            output_fields=["identity"],
            consistency_level=self._consistency,
        )
        empty = set(owners) - {r["identity"] for r in left}
        if empty:
            self._client.delete(self._meta_name, ids=[_identity_key(n) for n in sorted(empty)])
        self._recount()
        return len(rows)

    def refresh(self) -> int:
        """Re-read the counts (other writers may have enrolled); returns 0."""
        self._recount()
        return 0

    def save(self) -> None:
        """Flush inserted rows into sealed segments (Milvus indexes them there).

        Not needed for durability or visibility: each write is durable when it returns.
        """
        self._client.flush(self._name)

    def set_model(self, name: str) -> None:
        """Record the embedding model's name (done by the first recogniser enrolment)."""
        self._settings["model"] = str(name)
        self._client.upsert(self._meta_name, [_settings_row(self._settings)])

    def set_search_params(self, params: Mapping[str, int | None]) -> None:
        """Override search parameters (``ef``, ``nprobe``); ``None`` restores the default."""
        current = dict(self._settings.get("search_params") or {})
        self._settings["search_params"] = _check_search_params(params, current)
        self._client.upsert(self._meta_name, [_settings_row(self._settings)])

    def rebuild(self, index: str | None = None) -> None:
        """Rebuild the vector index, optionally as another type (``auto`` or a Milvus index)."""
        if index is not None:
            chosen = parse_index(index, lite=self._lite)
            self._settings["index_spec"] = AUTO if chosen is None else index.strip()
            self._settings["search_params"] = {}
        spec = parse_index(str(self._settings["index_spec"]))
        self._build_index(spec or auto_index(self._n_templates, self._lite))

    def check(self) -> Any:
        """Not applicable: Milvus keeps its index and its rows together (no separate index
        file that could fall behind, as with the local gallery).

        Raises:
            GalleryError: always.
        """
        raise GalleryError(
            f"{self.location}: nothing to check: Milvus maintains its own index (the check "
            "compares a local gallery's FAISS index with its database)"
        )

    def compact(self, vacuum: bool = True) -> None:
        """Ask Milvus to compact the collection (deleted rows are dropped in the background)."""
        self._client.compact(self._name)

    # ------------------------------------------------------------------ reads
    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        """The ``k`` most similar identities per query, each scored by its best template.

        Over-fetches templates, collapses them by identity, and searches deeper for the
        queries that got fewer than ``k`` distinct identities."""
        q = queries
        if self._n_templates == 0:  # another writer may have enrolled since
            self._recount()
        if self._n_templates == 0:
            return [[] for _ in range(len(q))]
        # the counts only size the first request (another writer may have changed them):
        # the search deepens until k identities or every template has been seen
        want = int(k)
        per_identity = math.ceil(self._n_templates / max(self._n_identities, 1))
        kk = min(MAX_TOPK, want * per_identity + min(want, 8))
        found: list[list[tuple[str, float, int]]] = [[] for _ in range(len(q))]
        pending = list(range(len(q)))
        while pending:
            hits = self._raw_search(q[pending], kk)
            again = []
            for row, qi in enumerate(pending):
                best: dict[str, tuple[float, int]] = {}
                for hit in hits[row]:
                    name = hit["entity"]["identity"]
                    if name not in best:
                        best[name] = (float(hit["distance"]), int(hit.id))
                exhausted = len(hits[row]) < kk or kk >= MAX_TOPK
                if len(best) < want and not exhausted:
                    again.append(qi)
                    continue
                found[qi] = [(n, s, t) for n, (s, t) in list(best.items())[:want]]
            pending = again
            kk = min(MAX_TOPK, kk * 4)
        names = sorted({n for row in found for n, _, _ in row})
        records = self._identity_rows(names)
        return [
            [
                Match(identity=n, similarity=s, template_id=t, metadata=_metadata(records.get(n)))
                for n, s, t in row
            ]
            for row in found
        ]

    def _raw_search(self, q: np.ndarray, kk: int) -> list[list[Any]]:
        params = self._search_params(kk)
        return self._client.search(
            self._name,
            data=[row for row in q],
            limit=kk,
            anns_field="vec",
            output_fields=["identity"],
            search_params={"metric_type": "IP", "params": params},
            consistency_level=self._consistency,
        )

    def _search_params(self, kk: int) -> dict[str, int]:
        params = self._default_params()
        params.update(self._settings.get("search_params") or {})
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), kk)  # HNSW needs ef >= limit
        return params

    def _default_params(self) -> dict[str, int]:
        kind = self._index.index_type
        if kind.startswith("HNSW"):
            return {"ef": _hnsw_ef(self._n_templates, self._lite)}
        if kind.startswith("IVF"):
            nlist = int(self._index.build.get("nlist", 128))
            return {"nprobe": _ivf_nprobe(nlist)}
        return {}

    def identity_count(self) -> int:
        self._recount()
        return self._n_identities

    def has_identity(self, name: str) -> bool:
        return bool(self._identity_rows([name]))

    def identities(self) -> list[str]:
        """Names of every enrolled identity, in enrolment order."""
        rows = list(self._iterate(self._meta_name, 'kind == "identity"', ["name", "seq"]))
        rows.sort(key=lambda r: (int(r["seq"]), r["name"]))
        return [r["name"] for r in rows]

    def template_counts(self) -> list[tuple[str, int]]:
        """(identity, templates) of every identity, in enrolment order."""
        counts: dict[str, int] = {}
        for row in self._iterate(self._name, "", ["identity"]):
            counts[row["identity"]] = counts.get(row["identity"], 0) + 1
        return [(n, counts.get(n, 0)) for n in self.identities()]

    def templates(self, name: str) -> list[int]:
        """Template ids of an identity ([] if unknown)."""
        rows = self._iterate(self._name, f"identity == {_quote(name)}", ["tid"])
        return sorted(int(r["tid"]) for r in rows)

    def metadata(self, name: str) -> dict[str, Any] | None:
        """The identity's metadata ({} when none was given; None if it is not enrolled)."""
        row = self._identity_rows([name]).get(name)
        return None if row is None else dict(row["value"] or {})

    def content_hashes(self) -> set[str]:
        """Content hashes recorded with enrolled templates (for resumable enrolment)."""
        rows = self._iterate(self._name, 'content_hash != ""', ["content_hash"])
        return {r["content_hash"] for r in rows}

    def model(self) -> str | None:
        """Name of the embedding model the gallery is for, if recorded."""
        value = self._settings.get("model")
        return str(value) if value is not None else None

    def factory(self) -> str:
        """The Milvus index in use, e.g. ``HNSW(M=32,efConstruction=200)``."""
        return self._index.describe()

    def tombstones(self) -> int:
        """Always 0: Milvus deletes for real (compaction reclaims the space)."""
        return 0

    @property
    def _lite(self) -> bool:
        return self.loc.kind == MILVUS_LITE

    @property
    def report_dir(self) -> Path:
        """Where bulk enrolment writes its failure report by default: next to a Milvus Lite
        file, the working directory for a server."""
        if self._lite:
            return Path(str(self.loc.path)).parent
        return Path.cwd()

    def info(self) -> GalleryInfo:
        """Settings and size, as a :class:`~npcface.gallery.GalleryInfo`."""
        self._recount()
        lite = self._lite
        return GalleryInfo(
            path=self.location,
            dim=self.dim,
            metric=self.metric,
            dtype="float32",
            index_spec=str(self._settings["index_spec"]),
            factory=self.factory(),
            search_params=self._search_params(1),
            identities=self._n_identities,
            templates=self._n_templates,
            index_vectors=self._n_templates,
            tombstones=0,
            removable=True,
            device="milvus-lite" if lite else "milvus",
            device_reason="embedded Milvus Lite" if lite else str(self.loc.server),
            model=self.model(),
            index_saved=True,
            schema_version=FORMAT_VERSION,
            disk_bytes=int(_disk_bytes(Path(str(self.loc.path)))) if lite else 0,
            created=float(self._settings.get("created", 0.0)),
        )

    # ---------------------------------------------------------------- helpers
    def _recount(self) -> None:
        """Re-read both counts (another writer may have changed them); searches size their
        first request from the cached counts and deepen when they were too low."""
        self._n_templates = self._count(self._name, "")
        self._n_identities = self._count(self._meta_name, 'kind == "identity"')

    def _count(self, collection: str, expr: str) -> int:
        rows = self._client.query(
            collection,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=self._consistency,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _identity_rows(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        keys = [_identity_key(n) for n in names]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            rows = self._client.query(
                self._meta_name,
                filter=f"key in [{', '.join(str(k) for k in chunk)}]",
                output_fields=["name", "value", "seq"],
                consistency_level=self._consistency,
            )
            for r in rows:
                out[r["name"]] = {"value": r["value"], "seq": r["seq"]}
        return {n: out[n] for n in names if n in out}

    def _iterate(self, collection: str, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        it = self._client.query_iterator(
            collection,
            batch_size=5000,
            filter=expr,
            output_fields=fields,
            consistency_level=self._consistency,
        )
        try:
            while True:
                batch = it.next()
                if not batch:
                    return
                yield from batch
        finally:
            it.close()

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Everything written is already durable: the same as :meth:`release`."""
        self.release()

    def release(self) -> None:
        """Close the connection (idempotent; the finalizer of a dropped Gallery)."""
        if self._released:
            return
        self._released = True
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not raise
            log.debug("%s: error while closing the Milvus client", self.location, exc_info=True)
        if self._lite:
            _release_lite(Path(str(self.loc.path)))

    def __repr__(self) -> str:
        return (
            f"MilvusBackend({self.location!r}, templates={self._n_templates}, "
            f"index={self.factory()!r})"
        )


def _check_search_params(
    params: Mapping[str, int | None], current: Mapping[str, int]
) -> dict[str, int]:
    """``current`` updated with ``params`` (``ef`` for HNSW, ``nprobe`` for IVF; ``None``
    drops an override).

    Raises:
        GalleryError: another key, or a value that is not a positive integer.
    """
    out = dict(current)
    for key, value in params.items():
        if key not in ("ef", "nprobe"):
            raise GalleryError(f"unknown search parameter {key!r}; use ef (HNSW) or nprobe (IVF)")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, bool) or int(value) != value or value < 1:
            raise GalleryError(f"{key} must be a positive integer, got {value!r}")
        else:
            out[key] = int(value)
    return out


# -------------------------------------------------------------------- module helpers
def _connect(loc: GalleryLocation) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MissingExtraError("Milvus galleries", "milvus", "pymilvus") from None
    if loc.kind == MILVUS_LITE:
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise MissingExtraError("Milvus Lite galleries", "milvus", "milvus-lite") from None
        Path(str(loc.path)).parent.mkdir(parents=True, exist_ok=True)
        _quiet_lite_server()
        with _LITE_LOCK:
            key = str(Path(str(loc.path)).resolve())
            _LITE_OPEN[key] = _LITE_OPEN.get(key, 0) + 1
    # dedicated: a channel of its own (pymilvus >= 3 shares one per address by default, and
    # an idle shared channel to Milvus Lite was closed by its server, "too many pings",
    # failing the next gallery opened in the process)
    kwargs: dict[str, Any] = {"timeout": CONNECT_TIMEOUT, "dedicated": True}
    if loc.kind == MILVUS_LITE:
        # no keep-alive pings to the embedded server: during a long call (an HNSW build takes
        # minutes) pymilvus's pings every 10 s made it answer GOAWAY "too_many_pings", and
        # pymilvus's retry of create_index then failed with "index already exists"
        kwargs["grpc_options"] = {
            "grpc.keepalive_time_ms": 2**31 - 1,
            "grpc.keepalive_permit_without_calls": 0,
        }
    token = os.environ.get(TOKEN_ENV)
    if token and loc.kind != MILVUS_LITE:
        kwargs["token"] = token
    try:
        return MilvusClient(loc.client_uri, **kwargs)
    except Exception as exc:
        if loc.kind == MILVUS_LITE:
            _release_lite(Path(str(loc.path)))
            raise GalleryError(
                f"{loc.uri}: cannot open the Milvus Lite file (another process may have it "
                f"open: Milvus Lite allows one process per file): {exc}"
            ) from exc
        raise GalleryError(f"{loc.uri}: cannot connect to Milvus: {exc}") from exc


def _disconnect(loc: GalleryLocation, client: Any) -> None:
    try:
        client.close()
    finally:
        if loc.kind == MILVUS_LITE:
            _release_lite(Path(str(loc.path)))


class _UnimplementedCallNoise(logging.Filter):
    """Milvus Lite's embedded gRPC server does not implement every call pymilvus makes
    (``AllocTimestamp`` when a collection is created); gRPC then logs an ERROR with a
    traceback per call (3 for one ``gallery create``), though pymilvus carries on and the
    gallery works. Such records go to this module's log at DEBUG instead; every other
    record of ``grpc._server`` passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, NotImplementedError) and "Method not implemented" in str(exc):
            method = record.exc_info[2]  # the servicer frame names the call
            while method is not None and method.tb_next is not None:
                method = method.tb_next
            name = method.tb_frame.f_code.co_name if method is not None else "?"
            log.debug("Milvus Lite does not implement %s (pymilvus goes on without it)", name)
            return False
        return True


_LITE_NOISE = _UnimplementedCallNoise()


def _quiet_lite_server() -> None:
    """Keep Milvus Lite's harmless "Method not implemented!" tracebacks off the terminal
    (see :class:`_UnimplementedCallNoise`); once per process."""
    grpc_server_log = logging.getLogger("grpc._server")
    if _LITE_NOISE not in grpc_server_log.filters:
        grpc_server_log.addFilter(_LITE_NOISE)


_LITE_LOCK = threading.Lock()
_LITE_OPEN: dict[str, int] = {}
"""Open galleries per Milvus Lite file in this process: the embedded server (and its file
lock) is stopped when the last one closes, so another process can open the file."""


def _release_lite(path: Path) -> None:
    key = str(path.resolve())
    with _LITE_LOCK:
        left = _LITE_OPEN.get(key, 0) - 1
        if left > 0:
            _LITE_OPEN[key] = left
            return
        _LITE_OPEN.pop(key, None)
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - older milvus-lite: the server lives until exit
        return
    server_manager_instance.release_server(str(path))


def _create_collections(
    client: Any, name: str, dim: int, index: MilvusIndex, consistency: str
) -> None:
    from pymilvus import DataType, MilvusClient

    tpl = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    tpl.add_field("tid", DataType.INT64, is_primary=True)
    tpl.add_field("identity", DataType.VARCHAR, max_length=MAX_NAME_LENGTH * 4)
    tpl.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_LENGTH * 4)
    tpl.add_field("content_hash", DataType.VARCHAR, max_length=128)
    tpl.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    meta.add_field("key", DataType.INT64, is_primary=True)
    meta.add_field("kind", DataType.VARCHAR, max_length=16)
    meta.add_field("name", DataType.VARCHAR, max_length=MAX_NAME_LENGTH * 4)
    meta.add_field("value", DataType.JSON)
    meta.add_field("seq", DataType.INT64)
    meta.add_field("vec", DataType.FLOAT_VECTOR, dim=len(_DUMMY))
    meta_index = client.prepare_index_params()
    meta_index.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
    client.create_collection(
        f"{name}__meta", schema=meta, index_params=meta_index, consistency_level=consistency
    )
    client.create_collection(
        name,
        schema=tpl,
        index_params=_index_params(client, index),
        consistency_level=consistency,
    )


def _index_params(client: Any, index: MilvusIndex) -> Any:
    params = client.prepare_index_params()
    params.add_index(
        field_name="vec",
        index_name="vec",
        index_type=index.index_type,
        metric_type="IP",
        # nested under "params" (Milvus's JSON form): Milvus Lite drops build parameters
        # that pymilvus sends as separate keys, and HNSW silently got M=16
        params={"params": dict(index.build)} if index.build else {},
    )
    return params


def _index_from_settings(settings: Mapping[str, Any]) -> MilvusIndex:
    idx = settings.get("index") or {}
    return MilvusIndex(str(idx.get("type", "FLAT")), dict(idx.get("build") or {}))


def _settings_row(settings: dict[str, Any]) -> dict[str, Any]:
    settings["revision"] = int(settings.get("revision", 0)) + 1
    return {
        "key": _SETTINGS_KEY,
        "kind": "settings",
        "name": "",
        "value": dict(settings),
        "seq": 0,
        "vec": _DUMMY,
    }


def _identity_row(name: str, value: dict[str, Any], seq: int) -> dict[str, Any]:
    return {
        "key": _identity_key(name),
        "kind": "identity",
        "name": name,
        "value": value,
        "seq": int(seq),
        "vec": _DUMMY,
    }


def _identity_key(name: str) -> int:
    """64-bit key of an identity's meta row (never 0, the settings row)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    return key or 1


def _metadata(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not record or not record.get("value"):
        return None
    return dict(record["value"])


def _quote(text: str) -> str:
    """A Milvus filter-expression string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _column(values: Sequence[str | None] | None, n: int, what: str, limit: int) -> list[str]:
    if values is None:
        return [""] * n
    values = list(values)
    if len(values) != n:
        raise GalleryError(f"{len(values)} {what} for {n} embeddings")
    out = ["" if v is None else str(v) for v in values]
    if any(len(v) > limit for v in out):
        raise GalleryError(f"{what}: an entry is longer than {limit} characters")
    return out


def _check_consistency(level: str) -> None:
    if level not in ("Strong", "Bounded", "Session", "Eventually"):
        raise GalleryError(
            f"consistency must be Strong, Bounded, Session or Eventually, not {level!r}"
        )


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0
