"""The :class:`MilvusBackend`: a gallery's storage and search in Milvus, behind the
:class:`~npcface.gallery.Gallery` facade."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import (
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    IdentityNotFoundError,
)
from ..backend import CompactReport, GalleryInfo
from ..uri import MILVUS_LITE, GalleryLocation, parse_gallery_uri
from .connection import (
    GuardedClient,
    _check_consistency,
    _connect,
    _disconnect,
    _release_lite,
)
from .schema import (
    _SETTINGS_KEY,
    FORMAT_VERSION,
    INSERT_BATCH,
    MAX_NAME_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_TOPK,
    _column,
    _create_collections,
    _disk_bytes,
    _identity_key,
    _identity_row,
    _metadata,
    _quote,
    _settings_row,
)
from .tiers import (
    AUTO,
    MilvusIndex,
    _check_search_params,
    _hnsw_ef,
    _index_from_settings,
    _index_params,
    _ivf_nprobe,
    auto_index,
    parse_index,
)

log = logging.getLogger(__name__)

METRICS = ("cosine", "ip")

COMPACT_TIMEOUT = 600.0
"""Seconds :meth:`MilvusBackend.compact` waits for Milvus to complete its compactions."""
COMPACT_POLL = 0.5
"""Seconds between two questions about a compaction's state."""


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
        self._name = str(location.collection)
        self._meta_name = f"{self._name}__meta"
        self._client = GuardedClient(client, location.uri, (self._name, self._meta_name))
        self._settings = settings
        self.readonly = readonly
        self._consistency = consistency
        self._released = False
        self.dim = int(settings["dim"])
        self.metric = str(settings["metric"])
        self._n_templates = 0
        self._n_identities = 0
        self._names: dict[int, str] = {}  # owner key -> identity name, from searches
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
                sees every acknowledged write), ``Bounded``, ``Session`` or ``Eventually``;
                a ``?consistency=`` in the URI takes precedence (see
                :mod:`npcface.gallery.uri` for what each costs).

        Raises:
            GalleryError: bad settings, a gallery already exists there, or Milvus is
                unreachable.
            MissingExtraError: pymilvus (or milvus-lite) is not installed.
        """
        loc = parse_gallery_uri(location)
        uri = loc.uri
        consistency = loc.consistency or consistency
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
        client = GuardedClient(_connect(loc), uri, ())
        try:
            name = str(loc.collection)
            if client.has_collection(name) or client.has_collection(f"{name}__meta"):
                raise GalleryExistsError(
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
        return cls(loc, client.raw, settings, False, consistency)

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
        consistency = loc.consistency or consistency
        _check_consistency(consistency)
        if loc.kind == MILVUS_LITE and not Path(str(loc.path)).exists():
            raise GalleryNotFoundError(
                f"{uri}: no gallery here ({loc.path} does not exist); create one with "
                "Gallery.create(uri, dim)"
            )
        client = GuardedClient(_connect(loc), uri, ())
        try:
            name = str(loc.collection)
            if not client.has_collection(f"{name}__meta") or not client.has_collection(name):
                raise GalleryNotFoundError(
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
        return cls(loc, client.raw, settings, bool(readonly), consistency)

    @staticmethod
    def exists(uri: str) -> bool:
        """Whether a gallery exists at ``uri`` (connects to the server; a missing Milvus
        Lite file is simply ``False``)."""
        loc = parse_gallery_uri(uri)
        if loc.kind == MILVUS_LITE and not Path(str(loc.path)).exists():
            return False
        client = GuardedClient(_connect(loc), uri, ())
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
            raise IdentityNotFoundError(f"{self.location}: no identity named {missing[0]!r}")
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

    def compact(self, vacuum: bool = True) -> CompactReport:
        """Flush and compact both collections of the gallery (templates and identities) and
        wait until Milvus reports both compactions completed (at most
        :data:`COMPACT_TIMEOUT` seconds in all; ``vacuum`` is ignored). Each collection's
        compaction is asked for once its flushed rows are indexed: Milvus (by default)
        leaves segments whose index is still being built out of a compaction.

        A completed compaction rewrites the segments that held deleted rows without them;
        the old segments' files are then removed by the server's garbage collector, and the
        inserts' copies in its message queue when their retention ends. With the server
        settings of ``docs/scale-out.md`` ("Erasure") no byte of a removed vector is left in
        any file of the server's data folder about a minute and a half after this returns;
        with Milvus's defaults that takes hours (garbage collection) to days (retention).

        Raises:
            GalleryUnavailableError: the server cannot be reached.
            GalleryError: Milvus Lite (it cannot compact on demand: its data files keep
                deleted vectors until its own merges rewrite them), the server refused or
                failed a compaction or an index build, or they did not complete within
                :data:`COMPACT_TIMEOUT` seconds (a compaction may still complete on the
                server).
        """
        if self._lite:
            raise GalleryError(
                f"{self.location}: Milvus Lite cannot compact on demand (it answers the "
                "request without compacting; deleted vectors stay in its data files until "
                "its own merges rewrite them); use a local gallery or a Milvus server where "
                "erasure at file level is needed"
            )
        from pymilvus.exceptions import MilvusException

        deadline = time.monotonic() + COMPACT_TIMEOUT
        collections = (self._name, self._meta_name)
        try:
            for coll in collections:
                self._client.flush(coll)  # deletes still in the data node's buffer
            jobs = []
            for coll in collections:
                # Milvus compacts only segments whose index is built (its default
                # dataCoord.compaction.indexBasedCompaction): asked earlier, it plans
                # nothing and reports the job completed
                self._wait_indexed(coll, deadline)
                jobs.append((coll, int(self._client.compact(coll))))
            for coll, job in jobs:
                self._wait_compaction(coll, job, deadline)
        except MilvusException as exc:
            raise GalleryError(f"{self.location}: Milvus failed to compact: {exc}") from exc
        return CompactReport(
            None,
            "the server compacted the gallery's collections; removed vectors leave its files "
            "with its garbage collection (docs/scale-out.md, Erasure)",
        )

    def _wait_indexed(self, collection: str, deadline: float) -> None:
        """Until no flushed row of ``collection`` waits for its index to be built."""
        for index in self._client.list_indexes(collection):
            while True:
                info = self._client.describe_index(collection, index) or {}
                if str(info.get("state")) == "Failed":
                    raise GalleryError(
                        f"{self.location}: Milvus failed to build index {index!r} of "
                        f"collection {collection!r}: {info.get('index_state_fail_reason')}"
                    )
                if int(info.get("pending_index_rows") or 0) == 0:
                    return
                if time.monotonic() > deadline:
                    raise GalleryError(
                        f"{self.location}: the index of collection {collection!r} was not "
                        f"built within {COMPACT_TIMEOUT:.0f} s, so nothing was compacted; "
                        "call compact() again later"
                    )
                time.sleep(COMPACT_POLL)

    def _wait_compaction(self, collection: str, job: int, deadline: float) -> None:
        while True:
            state = str(self._client.get_compaction_state(job))
            if state == "Completed":
                return
            if state != "Executing":
                raise GalleryError(
                    f"{self.location}: compaction {job} of collection {collection!r} is in "
                    f"state {state!r} (expected Executing or Completed)"
                )
            if time.monotonic() > deadline:
                raise GalleryError(
                    f"{self.location}: compaction {job} of collection {collection!r} did not "
                    f"complete within {COMPACT_TIMEOUT:.0f} s; it may still complete on the "
                    "server (call compact() again to wait for a new one)"
                )
            time.sleep(COMPACT_POLL)

    # ------------------------------------------------------------------ reads
    def search_sizes(self) -> tuple[int, int, int | None]:
        """(templates, identities, the deepest search Milvus answers). The counts only size
        the first request (another writer may change them): the facade's search deepens
        until it has ``k`` identities or every template has been seen."""
        if self._n_templates == 0:  # another writer may have enrolled since
            self._recount()
        return self._n_templates, self._n_identities, MAX_TOPK

    def template_search(
        self, queries: np.ndarray, kk: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(similarities, template ids, identity keys), each (n, kk), -1 where no hit."""
        hits = self._raw_search(queries, min(kk, MAX_TOPK))
        sims = np.zeros((len(queries), kk), np.float32)
        tids = np.full((len(queries), kk), -1, np.int64)
        owners = np.full((len(queries), kk), -1, np.int64)
        for row, found in enumerate(hits):
            for j, hit in enumerate(found[:kk]):
                name = hit["entity"]["identity"]
                key = _identity_key(name) & 0x7FFF_FFFF_FFFF_FFFF  # >= 0: -1 means none
                self._names[key] = name
                sims[row, j] = float(hit["distance"])
                tids[row, j] = int(hit.id)
                owners[row, j] = key
        return sims, tids, owners

    def identity_records(self, keys: Sequence[int]) -> dict[int, tuple[str, dict | None]]:
        """Name and metadata of the identities :meth:`template_search` found."""
        names = {k: self._names[k] for k in keys if k in self._names}
        records = self._identity_rows(sorted(set(names.values())))
        return {k: (n, _metadata(records.get(n))) for k, n in names.items()}

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
