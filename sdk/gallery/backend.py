"""The seam between the :class:`~npcface.gallery.Gallery` facade and a storage backend.

The facade (``gallery.py``) owns what every backend shares: argument checks (dimension,
NaN and zero vectors, names, ``k``, thresholds), the metric's normalisation, one lock per
Gallery (thread safety), the closed/read-only state and the finalizer that releases a
dropped Gallery. A backend owns storage and search and implements :class:`Backend`; it is
called with the facade's lock held and with vectors already checked (float32, (n, dim),
finite, unit rows for ``cosine``), so it needs no locking or checking of its own.

Backends:

* ``local`` (:mod:`npcface.gallery.local`, any plain path): SQLite + FAISS, one writer
  process and readers that follow it.
* ``milvus`` (:mod:`npcface.gallery.milvus`, ``milvus://host:19530/name``,
  ``milvus-lite:///abs/path.db``): a Milvus server or cluster, or Milvus Lite in one file.
* others: a backend module registers its URI schemes with :func:`register_backend`, or
  they are listed in :data:`BACKENDS` as ``"module:attribute"`` so that nothing is
  imported until a gallery of that scheme is opened.

A backend class provides, besides the protocol, two constructors and a test::

    create(location, *, dim, metric, index, dtype, model, search_params) -> Backend
    open(location, *, readonly, on_bad_index) -> Backend
    exists(location) -> bool

Search is split so that one piece of code turns template hits into identities for every
backend (:func:`npcface.gallery.search.top_identities`, in the facade): a backend answers
:meth:`Backend.template_search` (template hits with their owners) and
:meth:`Backend.identity_records`; it never collapses hits itself.

To add a backend: implement this protocol (copy :mod:`npcface.gallery.local` or
:mod:`npcface.gallery.milvus`), :func:`register_backend` its URI schemes, and add it to the
``BACKENDS`` list of ``tests/test_gallery_backends.py``, whose every test then runs on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import GalleryError
from ..registry import Registry


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery's settings and size.

    Attributes:
        path: the gallery directory (or a backend's URI).
        dim: embedding dimension.
        metric: ``cosine`` or ``ip``.
        dtype: how vectors are stored in the database (``float32`` or ``float16``).
        index_spec: what the user asked for: ``auto`` or a FAISS factory string.
        factory: the FAISS factory string of the index in use.
        search_params: the search parameters in effect (``efSearch``, ``nprobe``).
        identities: enrolled identities.
        templates: stored templates (embeddings); an identity may have several.
        index_vectors: vectors in the index, deleted-but-not-compacted ones included.
        tombstones: deleted templates still in the index (filtered out at search time).
        removable: whether the index deletes vectors for real (else tombstones + compact()).
        device: ``cpu`` or ``gpu`` (for searches with the default k).
        device_reason: why that device.
        model: name of the embedding model the gallery is for, if recorded.
        index_saved: the index file on disk is up to date with the database.
        schema_version: version of the database schema.
        disk_bytes: size of the gallery directory.
        created: UNIX time of creation.
    """

    path: str
    dim: int
    metric: str
    dtype: str
    index_spec: str
    factory: str
    search_params: dict[str, int]
    identities: int
    templates: int
    index_vectors: int
    tombstones: int
    removable: bool
    device: str
    device_reason: str
    model: str | None
    index_saved: bool
    schema_version: int
    disk_bytes: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsistencyReport:
    """Comparison of the index's ids with the database's live templates.

    Attributes:
        ok: every live template is in the index exactly once, and ids that are not live are
            only present where the index keeps tombstones.
        missing: live template ids absent from the index.
        unexpected: ids in the index that are not live (expected tombstones where the index
            cannot remove vectors).
        duplicates: number of ids stored more than once.
    """

    ok: bool
    missing: tuple[int, ...] = field(default=())
    unexpected: tuple[int, ...] = field(default=())
    duplicates: int = 0


@dataclass(frozen=True)
class CompactReport:
    """What :meth:`~npcface.gallery.Gallery.compact` did, as its backend reports it.

    Attributes:
        dropped: deleted templates dropped from the index; ``None`` where the backend cannot
            count them (a Milvus server rewrites its segments itself).
        detail: one sentence on what was done and what follows (the CLI prints it).
    """

    dropped: int | None
    detail: str


class Backend(Protocol):
    """What the :class:`~npcface.gallery.Gallery` facade needs from storage and search.

    Vectors passed in are float32 (n, dim) rows, checked and (for ``cosine``) normalised by
    the facade. Identity names are checked non-empty strings. Methods that write are only
    called when :attr:`readonly` is false. Errors are :class:`~npcface.errors.GalleryError`
    (or subclasses).
    """

    location: Path | str
    """Where the gallery lives (a directory, or a URI), for messages and ``Gallery.path``."""
    dim: int
    metric: str
    readonly: bool

    def reading(self) -> AbstractContextManager[None]:
        """A block whose reads all see one committed state that includes every change
        committed (by any process) before the block began."""
        ...

    # reads
    def model(self) -> str | None: ...
    def factory(self) -> str: ...
    def tombstones(self) -> int: ...
    def identity_count(self) -> int: ...
    def has_identity(self, name: str) -> bool: ...
    def identities(self) -> list[str]: ...
    def template_counts(self) -> list[tuple[str, int]]: ...
    def templates(self, name: str) -> list[int]: ...
    def content_hashes(self) -> set[str]: ...
    def metadata(self, name: str) -> dict[str, Any] | None:
        """The identity's metadata ({} when none was given; None if it is not enrolled)."""

    def search_sizes(self) -> tuple[int, int, int | None]:
        """(vectors searched, tombstones included; live identities; the most templates one
        search may ask for, or None): what sizes the facade's first template search."""
        ...

    def template_search(
        self, queries: np.ndarray, kk: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``kk`` nearest templates per query: (similarities (n, kk) float32, template
        ids (n, kk) int64, owner identity ids (n, kk) int64, >= 0), best first; -1 ids and
        owners where there is no hit or the template was deleted."""
        ...

    def identity_records(self, ids: Sequence[int]) -> dict[int, tuple[str, dict | None]]:
        """identity id (as :meth:`template_search` gives them) -> (name, metadata or None)."""
        ...

    def info(self) -> GalleryInfo: ...
    def check(self) -> ConsistencyReport: ...

    # writes
    def add(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str | None] | None,
        content_hashes: Sequence[str | None] | None,
        metadata: Mapping[str, Mapping[str, Any]] | None,
    ) -> list[int]:
        """Store templates durably; returns their new ids in input order."""
        ...

    def remove_identities(self, names: Sequence[str]) -> int: ...
    def remove_templates(self, template_ids: Sequence[int]) -> int: ...
    def set_model(self, name: str) -> None: ...
    def set_search_params(self, params: Mapping[str, int | None]) -> None: ...
    def rebuild(self, index: str | None) -> None: ...
    def compact(self, vacuum: bool) -> CompactReport: ...
    def save(self) -> None: ...
    def refresh(self) -> int:
        """Catch up with changes committed elsewhere; returns how many were applied."""
        ...

    # lifecycle
    def close(self) -> None:
        """Persist what needs persisting, then :meth:`release`."""
        ...

    def release(self) -> None:
        """Free connections and locks without persisting anything (idempotent; it is the
        finalizer of a dropped Gallery)."""
        ...


MILVUS_BACKEND = "npcface.gallery.milvus:MilvusBackend"
BACKENDS: Registry[Any] = Registry("gallery URI scheme")
"""URI scheme -> backend class, or ``"module:attribute"`` naming it (imported on first use),
in the one registry implementation. Plain paths (no ``scheme://``) are local galleries."""
BACKENDS.add("milvus", MILVUS_BACKEND, "milvus+http", "milvus+https", "milvus-lite")


def register_backend(scheme: str, backend: Any) -> None:
    """Make ``Gallery.create``/``Gallery.open`` of ``scheme://...`` use ``backend``.

    Raises:
        GalleryError: the scheme is taken by another backend.
    """
    if scheme.lower() in BACKENDS.names():
        if BACKENDS.get(scheme) is backend:
            return
        raise GalleryError(f"gallery URI scheme {scheme!r} is already registered")
    BACKENDS.add(scheme, backend)
