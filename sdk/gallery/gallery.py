"""The :class:`Gallery`: enrolled identities, searchable in milliseconds, nothing lost.

This module is the facade: argument checks (``checks.py``), one lock per Gallery, the
open/closed/read-only state and the finalizer of a dropped Gallery. Storage and search sit behind the small
:class:`~npcface.gallery.backend.Backend` protocol (see :mod:`npcface.gallery.backend`):

* a plain path is a **local** gallery (:mod:`npcface.gallery.local`), a directory::

      GALLERY/
        gallery.db          SQLite: identities, templates (the vectors), metadata, schema version
        index.json          sidecar: which index file, its SHA-256, factory string, coverage
        index-<sha>.faiss   the FAISS index (a cache of the database, rebuildable at any time)
        .lock               held by the process that has the gallery open for writing

  built from parts with one job each: ``store.py`` (SQLite), ``idmap.py`` (template id ->
  identity), ``upkeep.py`` (the FAISS index kept in step with the database: load, catch up,
  rebuild, switch type, save, GPU placement; FAISS itself in ``index.py``), ``search.py``
  (template hits collapsed to identities) and ``fsutil.WriterLock`` (one writer);
* a URI (``"milvus-lite:///abs/path.db"``) goes to the backend registered for its scheme.

Local galleries: the database is the source of truth. :meth:`Gallery.add` returns only after
its transaction has committed; the index is updated in memory and saved atomically by
:meth:`Gallery.save` (also on :meth:`Gallery.close`, after rebuilds, and periodically by bulk
enrolment). The sidecar records the last template id and the last deletion the saved index
covers, so :meth:`Gallery.open` catches a stale index up from the database, and rebuilds it
when it is missing, damaged (SHA-256 mismatch), of another type, or newer than the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    GalleryArgumentError,
    GalleryClosedError,
    GalleryEmbeddingError,
    GalleryError,
    UnknownNameError,
)
from ..results import Match
from . import index as ix
from .backend import BACKENDS, Backend, CompactReport, ConsistencyReport, GalleryInfo
from .checks import (
    METRICS,
    as_list,
    check_dim,
    check_int,
    check_k,
    check_location,
    check_name,
    check_threshold,
    prepare_vectors,
    texts,
)
from .local import LocalBackend
from .search import to_matches, top_identities

__all__ = ["AddResult", "ConsistencyReport", "Gallery", "GalleryInfo"]

ON_BAD_INDEX = ("rebuild", "raise")


class Gallery:
    """Enrolled identities with their face templates, searchable by similarity.

    Create one with :meth:`create`, reopen it with :meth:`open`; use it as a context manager
    (or call :meth:`close`) so the index is saved. A Gallery that is dropped without
    :meth:`close` still releases its lock and database (its unsaved index is caught up from
    the database by the next open, as after a crash).

    Sharing: one process may have a gallery open for writing (a lock file enforces it; a
    second writable open in the same process is refused too); any number of processes may
    open it ``readonly``. A reader follows the writer by itself: every read (search, identify,
    identities, len, info, template_counts, ...) first checks SQLite's ``PRAGMA
    data_version`` (one cheap call) and, if the writer committed anything, catches its index
    up from the database; the read then answers from one committed database state, so it
    reflects every change committed before it started and never returns a removed identity.

    Threads: one Gallery object may be shared by any number of threads (searches concurrent
    with adds and removals); its methods are serialised by one lock.

    Example::

        with Gallery.create("staff", dim=512) as g:
            g.add("alice", alice_embeddings, metadata={"employee": 17})
            g.search(query, k=5)[0]          # [Match(identity='alice', ...), ...]
            g.identify(query, threshold=0.4) # Match or None (open set)
    """

    def __init__(self, backend: Backend) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self._backend = backend
        self.path = backend.location
        """The gallery directory (a :class:`~pathlib.Path`), or a backend's URI."""
        self.dim = int(backend.dim)
        self.metric = str(backend.metric)
        self._readonly = bool(backend.readonly)
        self._mutex = threading.RLock()
        self._closed = False
        # a dropped Gallery releases its backend (database, lock) without saving: the next
        # open catches the index up from the database, as after a crash
        self._finalizer = weakref.finalize(self, backend.release)

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        metric: str = "cosine",
        *,
        index: str = ix.AUTO,
        dtype: str = "float32",
        model: str | None = None,
        search_params: Mapping[str, int] | None = None,
    ) -> Gallery:
        """Create an empty gallery in directory ``path`` (created if needed).

        Args:
            path: a new directory, or an existing one without a gallery in it; or a URI of
                another backend (``"milvus-lite:///abs/path.db"``).
            dim: embedding dimension (e.g. 128 for SFace, 512 for ArcFace).
            metric: ``cosine`` (vectors normalised; the usual choice for face embeddings) or
                ``ip`` (raw inner product).
            index: ``auto`` (exact search below 50k templates, then fast-scan PQ codes
                with exact re-ranking, from 500k behind an IVF front; see
                :mod:`npcface.gallery.index`) or any FAISS ``index_factory`` string, e.g.
                ``"HNSW32,SQ8"`` or ``"IVF4096_HNSW32,PQ64"``. Indexes that need training are
                built once there are enough templates; until then search is exact. For a
                Milvus address: ``auto`` or a Milvus index (``"HNSW:M=32"``, ``"IVF_FLAT"``;
                see :func:`npcface.gallery.milvus.parse_index`).
            dtype: storage type of vectors in the database, ``float32`` or ``float16``
                (half the disk; the precision loss is ~1e-3 in cosine).
            model: name of the embedding model whose vectors the gallery holds; recorded so
                that vectors of another model are refused by the recogniser integration.
            search_params: overrides of the search parameters (``efSearch``, ``nprobe``).

        Returns:
            The open gallery (writable).

        Raises:
            GalleryError: invalid settings, or a gallery already exists at ``path``.
        """
        backend_cls, location = backend_for(check_location(path))
        dim = check_dim(dim)
        if metric not in METRICS:
            raise GalleryArgumentError(
                f"metric must be one of {', '.join(METRICS)}, not {metric!r}"
            )
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise GalleryArgumentError(f"model must be a non-empty string or None, got {model!r}")
        backend = backend_cls.create(
            location,
            dim=dim,
            metric=metric,
            index=index,
            dtype=dtype,
            model=model,
            search_params=search_params,
        )
        return cls(backend)

    @classmethod
    def open(
        cls, path: str | Path, *, readonly: bool = False, on_bad_index: str = "rebuild"
    ) -> Gallery:
        """Open an existing gallery.

        Args:
            path: the gallery directory, or a URI of another backend.
            readonly: open without the writer lock; the index is kept up to date in memory
                only and every write raises. Use it to search while another process enrols:
                it sees every change the writer commits, from the next call on.
            on_bad_index: ``rebuild`` (default) rebuilds a missing, damaged or mismatched
                index from the database; ``raise`` raises
                :class:`~npcface.errors.GalleryCorruptError` instead.

        Raises:
            GalleryError: no gallery at ``path``, or it is open for writing elsewhere (in
                another process, or by another Gallery object in this one).
            GalleryCorruptError: the database is damaged or of a newer schema version.
        """
        if on_bad_index not in ON_BAD_INDEX:
            raise GalleryArgumentError(
                f"on_bad_index must be 'rebuild' or 'raise', not {on_bad_index!r}"
            )
        backend_cls, location = backend_for(check_location(path))
        return cls(backend_cls.open(location, readonly=bool(readonly), on_bad_index=on_bad_index))

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether a gallery is at ``path`` (a directory, or another backend's URI).

        Raises:
            GalleryError: a URI no backend serves, or a backend that cannot be reached.
        """
        backend_cls, location = backend_for(check_location(path))
        return bool(backend_cls.exists(location))

    # ----------------------------------------------------------------- guards
    @contextlib.contextmanager
    def _reading(self) -> Iterator[Backend]:
        """The lock, and the backend caught up with every committed change."""
        with self._mutex:
            self._check_open()
            with self._backend.reading():
                yield self._backend

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Backend]:
        with self._mutex:
            self._check_open()
            if self._readonly:
                raise GalleryError(
                    f"{self.path}: gallery opened read-only; open it without readonly"
                )
            yield self._backend

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryClosedError(f"{self.path}: gallery is closed")

    # ----------------------------------------------------------------- writes
    def add(
        self,
        identity: str,
        embeddings: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        *,
        sources: Sequence[str | None] | None = None,
        content_hashes: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Enroll templates of one identity (created if new).

        Args:
            identity: the identity's name (non-empty).
            embeddings: (d,) or (n, d) embeddings of that person.
            metadata: JSON-serialisable dict merged into the identity's metadata (returned
                with every :class:`~npcface.results.Match` of this identity).
            sources: optional (n,) text per template, e.g. the image path.
            content_hashes: optional (n,) content hash per template (used by bulk enrolment
                to skip files already enrolled).

        Returns:
            The new template ids. They are durable when this returns.

        Raises:
            GalleryError: wrong dimension, non-finite or zero vectors, bad name or metadata,
                or the gallery is read-only.
        """
        name = check_name(identity)
        vecs = self._prepare(embeddings, "embeddings")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise GalleryArgumentError(
                f"metadata must be a dict or None, got {type(metadata).__name__}"
            )
        meta = {name: dict(metadata)} if metadata else None
        return self._add([name] * len(vecs), vecs, sources, content_hashes, meta)

    def add_once(
        self,
        identity: str,
        embeddings: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
        *,
        content_hashes: Sequence[str] | None = None,
        sources: Sequence[str | None] | None = None,
        request_key: str | None = None,
    ) -> AddResult:
        """Enroll templates exactly once: rows whose content ``identity`` holds already are
        not stored again, and a retried request (same ``request_key``) writes nothing and
        gets the first outcome. What a service needs when a client retries after a
        timeout or a dropped connection.

        Args:
            identity: the identity's name (created if new).
            embeddings: (d,) or (n, d) embeddings of that person.
            metadata: merged into the identity's metadata.
            content_hashes: (n,) what each row was made from (e.g. the SHA-256 of the image
                file); default: the SHA-256 of the row's float32 values.
            sources: optional (n,) text per template.
            request_key: a key naming this request (an ``Idempotency-Key``); its outcome is
                kept for :data:`~npcface.gallery.store.REQUEST_TTL_S` seconds.

        Returns:
            An :class:`AddResult`: one template id per row, new or already held.

        Raises:
            GalleryError: as :meth:`add`; ``request_key`` used before for another request
                (:class:`~npcface.errors.GalleryArgumentError`); a backend without
                exactly-once writes (Milvus).
        """
        name = check_name(identity)
        vecs = self._prepare(embeddings, "embeddings")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise GalleryArgumentError(
                f"metadata must be a dict or None, got {type(metadata).__name__}"
            )
        if content_hashes is None:
            content_hashes = [hashlib.sha256(row.tobytes()).hexdigest() for row in vecs]
        hashes = texts(content_hashes, "content_hashes", len(vecs)) or []
        if any(h is None or not h for h in hashes):
            raise GalleryArgumentError("content_hashes must be non-empty strings")
        sources = texts(sources, "sources", len(vecs))
        request = None
        if request_key is not None:
            if not isinstance(request_key, str) or not 1 <= len(request_key) <= 255:
                raise GalleryArgumentError(
                    f"request_key must be a string of 1 to 255 characters, got {request_key!r}"
                )
            request = (request_key, _fingerprint(name, hashes, metadata))
        with self._writing() as backend:
            if not hasattr(backend, "add_once"):
                raise GalleryError(f"{self.path}: this backend has no exactly-once writes")
            done = backend.add_once(name, vecs, hashes, sources, metadata, request)
        return AddResult(done.template_ids, done.added, done.replayed)

    def add_many(
        self,
        identities: Sequence[str],
        embeddings: np.ndarray,
        *,
        sources: Sequence[str | None] | None = None,
        content_hashes: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Enroll templates of several identities in one transaction (bulk enrolment).

        Args:
            identities: (n,) identity name of each row of ``embeddings``.
            embeddings: (n, d) embeddings.
            sources, content_hashes: as in :meth:`add`.

        Returns:
            The new template ids, in input order; durable when this returns.

        Raises:
            GalleryError: as :meth:`add`, or not one name per embedding.
        """
        names = [check_name(n) for n in as_list(identities, "identities")]
        vecs = self._prepare(embeddings, "embeddings")
        if len(names) != len(vecs):
            raise GalleryArgumentError(f"{len(names)} identities for {len(vecs)} embeddings")
        return self._add(names, vecs, sources, content_hashes, None)

    def _add(
        self,
        names: list[str],
        vecs: np.ndarray,
        sources: Sequence[str | None] | None,
        content_hashes: Sequence[str | None] | None,
        metadata: dict[str, dict[str, Any]] | None,
    ) -> list[int]:
        sources = texts(sources, "sources", len(vecs))
        content_hashes = texts(content_hashes, "content_hashes", len(vecs))
        with self._writing() as backend:
            if not len(vecs):
                return []
            return backend.add(names, vecs, sources, content_hashes, metadata)

    def remove(self, identity: str) -> int:
        """Delete an identity and all its templates.

        Returns:
            The number of templates deleted.

        Raises:
            GalleryError: unknown identity, or the gallery is read-only.
        """
        return self.remove_many([identity])

    def remove_many(self, identities: Sequence[str]) -> int:
        """Delete several identities in one transaction (all or none).

        Returns:
            The number of templates deleted.

        Raises:
            GalleryError: an identity is unknown (nothing is deleted), or read-only.
        """
        if isinstance(identities, str):
            identities = [identities]
        names = [check_name(n) for n in as_list(identities, "identities")]
        with self._writing() as backend:
            return backend.remove_identities(names)

    def remove_templates(self, template_ids: Sequence[int]) -> int:
        """Delete individual templates (an identity left with none is deleted too).

        Returns:
            The number of templates that existed and were deleted.

        Raises:
            GalleryError: ids that are not integers, or the gallery is read-only.
        """
        ids = [check_int(t, "template ids") for t in as_list(template_ids, "template_ids")]
        with self._writing() as backend:
            return backend.remove_templates(ids)

    def check_model(self, model: str, dim: int) -> None:
        """Refuse embeddings of another model; record ``model`` on first use (a writable
        gallery). What every writer of images into a gallery calls first.

        Args:
            model: the embedding model's name (``RecognizerInfo.name``).
            dim: its embedding size.

        Raises:
            GalleryError: the gallery holds vectors of another dimension or was enrolled
                with another model (embeddings of different models are not comparable).
        """
        if int(dim) != self.dim:
            raise GalleryError(
                f"{self.path}: gallery holds {self.dim}-dimensional embeddings, model "
                f"{model} makes {int(dim)}-dimensional ones; use the model the gallery was "
                "enrolled with"
            )
        recorded = self.model
        if recorded is None:
            if not self._readonly:
                self.set_model(model)
        elif recorded != model:
            raise GalleryError(
                f"{self.path}: gallery was enrolled with model {recorded!r}, this recogniser "
                f"is {model!r}; embeddings of different models are not comparable"
            )

    def set_model(self, name: str) -> None:
        """Record the embedding model's name (done by the first recogniser enrolment)."""
        if not isinstance(name, str) or not name.strip():
            raise GalleryArgumentError(f"model name must be a non-empty string, got {name!r}")
        with self._writing() as backend:
            backend.set_model(name)

    def set_search_params(self, **params: int | None) -> None:
        """Override search parameters (``efSearch``, ``nprobe``); ``None`` restores the default.

        Raises:
            GalleryError: the parameter does not apply to the current index.
        """
        with self._writing() as backend:
            backend.set_search_params(params)

    def save(self) -> None:
        """Write the index to disk atomically if it changed since the last save."""
        with self._writing() as backend:
            backend.save()

    def rebuild(self, index: str | None = None) -> None:
        """Rebuild the index from the database, optionally as another index type.

        Args:
            index: ``auto`` or a FAISS factory string to switch to; ``None`` keeps the
                current choice.
        """
        with self._writing() as backend:
            backend.rebuild(index)

    def compact(self, vacuum: bool = True) -> CompactReport:
        """Drop tombstones by rebuilding the index, and optionally shrink the database file.

        ``auto`` galleries may move back to a smaller index type here. On a Milvus server:
        flush and compact both of the gallery's collections and wait until the compactions
        complete (``vacuum`` is ignored); removed vectors then leave the server's files with
        its garbage collection and message-queue retention (``docs/scale-out.md``,
        "Erasure").

        Returns:
            What was done (:class:`CompactReport`: templates dropped, one sentence).

        Raises:
            GalleryArgumentError: ``vacuum`` is not a bool.
            GalleryUnavailableError: the Milvus server cannot be reached.
            GalleryError: read-only or closed; Milvus Lite (no compaction on demand); a
                Milvus compaction failed or did not complete in time.
        """
        if not isinstance(vacuum, (bool, np.bool_)):
            raise GalleryArgumentError(f"vacuum must be True or False, got {vacuum!r}")
        with self._writing() as backend:
            return backend.compact(bool(vacuum))

    def refresh(self) -> int:
        """Catch up with changes another process committed since the last call.

        Not needed: a ``readonly`` gallery does this by itself at the start of every read
        (search, identify, identities, len, info, ...). Returns the number of template
        changes applied.
        """
        with self._mutex:
            self._check_open()
            return self._backend.refresh()

    def is_current(self) -> bool:
        """Whether this handle's path still holds the gallery it opened: False once that
        gallery was deleted (or deleted and created again; a readonly handle then refuses
        to answer). True for backends that cannot tell. One ``stat``, no lock."""
        if self._closed:
            return False
        check = getattr(self._backend, "is_current", None)
        return True if check is None else bool(check())

    # ------------------------------------------------------------------ reads
    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        """The ``k`` most similar identities for each query.

        Each identity appears once, scored by its best template (several templates of one
        person never crowd out other people).

        Args:
            queries: (d,) or (n, d) query embeddings.
            k: identities per query (fewer if the gallery holds fewer).

        Returns:
            One list per query, most similar first.

        Raises:
            GalleryError: wrong dimension, non-finite or zero vectors, or ``k < 1``.
        """
        k = check_k(k)
        q = self._prepare(queries, "queries")
        with self._reading() as backend:
            indexed, identities, max_kk = backend.search_sizes()
            if identities == 0 or indexed == 0:
                return [[] for _ in range(len(q))]
            idents, sims, tids = top_identities(
                backend.template_search,
                q,
                min(k, identities),
                indexed=indexed,
                identities=identities,
                max_kk=max_kk,
            )
            records = backend.identity_records(np.unique(idents[idents >= 0]).tolist())
        if self.metric == "cosine":  # unit vectors: rounding may take a cosine past 1
            sims = np.clip(sims, -1.0, 1.0)
        return to_matches(idents, sims, tids, records)

    def identify(self, query: np.ndarray, threshold: float) -> Match | None:
        """Open-set identification: the best identity if it is similar enough, else ``None``.

        Args:
            query: (d,) embedding.
            threshold: minimum similarity to accept (e.g. the model's verification
                threshold). Lower accepts more strangers as someone enrolled.

        Raises:
            GalleryError: as :meth:`search`, or a threshold that is not a finite number.
        """
        q = np.asarray(query)
        if q.ndim != 1:
            raise GalleryEmbeddingError(f"identify takes one (d,) embedding, got shape {q.shape}")
        limit = check_threshold(threshold, self.metric)
        best = self.search(q, k=1)[0]
        if best and best[0].similarity >= limit:
            return best[0]
        return None

    def _prepare(self, x: Any, what: str) -> np.ndarray:
        """(n, dim) float32 rows, checked; unit rows for ``cosine``."""

        def model() -> str | None:
            with self._mutex:
                return None if self._closed else self._backend.model()

        return prepare_vectors(
            x, what, dim=self.dim, metric=self.metric, where=str(self.path), model=model
        )

    def __len__(self) -> int:
        """Number of enrolled identities."""
        with self._reading() as backend:
            return backend.identity_count()

    def __contains__(self, identity: object) -> bool:
        try:
            name = check_name(identity)
        except GalleryArgumentError:
            return False  # no such name can be enrolled
        with self._reading() as backend:
            return backend.has_identity(name)

    def identities(self) -> list[str]:
        """Names of every enrolled identity, in enrolment order."""
        with self._reading() as backend:
            return backend.identities()

    def template_counts(self) -> dict[str, int]:
        """Number of templates of every identity, in enrolment order."""
        with self._reading() as backend:
            return dict(backend.template_counts())

    def templates(self, identity: str) -> list[int]:
        """Template ids of an identity ([] if unknown)."""
        name = check_name(identity)
        with self._reading() as backend:
            return backend.templates(name)

    def content_hashes(self) -> set[str]:
        """Content hashes recorded with enrolled templates (for resumable enrolment)."""
        with self._reading() as backend:
            return backend.content_hashes()

    def metadata(self, identity: str) -> dict[str, Any] | None:
        """The metadata merged into ``identity`` by every :meth:`add` ({} when none was
        given), as search results carry it; ``None`` if the identity is not enrolled."""
        name = check_name(identity)
        with self._reading() as backend:
            return backend.metadata(name)

    @property
    def model(self) -> str | None:
        """Name of the embedding model the gallery is for, if recorded."""
        with self._reading() as backend:
            return backend.model()

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def report_dir(self) -> Path:
        """Where bulk enrolment writes its failure report by default: a local gallery's
        folder, or where its backend says (next to a Milvus Lite file, else the working
        directory)."""
        return Path(getattr(self._backend, "report_dir", self.path))

    @property
    def factory(self) -> str:
        """The FAISS factory string of the index in use."""
        with self._reading() as backend:
            return backend.factory()

    @property
    def tombstones(self) -> int:
        """Deleted templates still held by the index (0 for indexes that remove for real)."""
        with self._reading() as backend:
            return backend.tombstones()

    def info(self) -> GalleryInfo:
        """Settings and size of the gallery."""
        with self._reading() as backend:
            return backend.info()

    def check(self) -> ConsistencyReport:
        """Compare the index's ids with the database's live templates (O(n))."""
        with self._reading() as backend:
            return backend.check()

    # -------------------------------------------------------------- lifecycle
    def delete(self) -> None:
        """Delete the gallery and every file of it, and close this handle (a writable one).

        Other handles of the gallery, in this process or others, answer
        :class:`~npcface.errors.GalleryNotFoundError` from their next call (reads in flight
        finish); a gallery created again at the same path is a new one to them.

        Raises:
            GalleryError: the handle is read-only or closed, or the backend cannot delete.
        """
        with self._writing() as backend:
            if not hasattr(backend, "delete"):
                raise GalleryError(f"{self.path}: this backend cannot delete a gallery")
            self._closed = True
            self._finalizer.detach()
            backend.delete()

    def close(self, save: bool = True) -> None:
        """Save the index if it changed, release the lock, close the database (idempotent).

        Args:
            save: ``False`` skips saving the index (its files are about to be deleted; a
                later open catches an unsaved index up from the database anyway).
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._finalizer.detach()
            if save:
                self._backend.close()
            else:
                self._backend.release()

    def _release(self) -> None:
        """Close without saving anything (what a crash or a dropped Gallery does)."""
        with self._mutex:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else repr(self._backend)
        return f"Gallery({str(self.path)!r}, {state})"


@dataclass(frozen=True)
class AddResult:
    """What :meth:`Gallery.add_once` did.

    Attributes:
        template_ids: one per input row, in order: the template stored now, or the one of
            the identity that holds that content already.
        added: one per row: True where a template was stored now.
        replayed: the request key had committed before, so nothing was written now and
            this is that request's outcome.
    """

    template_ids: tuple[int, ...]
    added: tuple[bool, ...]
    replayed: bool = False

    @property
    def new(self) -> int:
        """How many templates were stored (by this call or, replayed, by the first)."""
        return sum(self.added)


def _fingerprint(name: str, hashes: Sequence[str], metadata: Mapping[str, Any] | None) -> str:
    """What a request asked for, for telling a retry from another request under one key."""
    try:
        meta = json.dumps(metadata or {}, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise GalleryArgumentError(f"metadata must be JSON-serialisable: {exc}") from None
    text = json.dumps([name, list(hashes), meta])
    return hashlib.sha256(text.encode()).hexdigest()


def backend_for(location: str | Path) -> tuple[Any, str | Path]:
    """The backend class for a path or URI, and the location to hand it.

    Raises:
        GalleryError: a URI whose scheme no backend serves.
    """
    text = str(location)
    if isinstance(location, Path) or "://" not in text:
        return LocalBackend, Path(location)
    scheme, rest = text.split("://", 1)
    if scheme.lower() == "file":
        return LocalBackend, Path(rest)
    try:
        backend = BACKENDS.get(scheme)
    except UnknownNameError:
        raise GalleryArgumentError(
            f"no gallery backend for {scheme}:// in {text!r} (URI schemes: "
            f"{', '.join(BACKENDS.names()) or 'none installed'}; a plain path is a local gallery)"
        ) from None
    if isinstance(backend, str):  # "module:attribute", imported on first use
        module, _, attr = backend.partition(":")
        backend = getattr(importlib.import_module(module), attr)
    return backend, text
