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

Search answers template hits (:meth:`MilvusBackend.template_search`), which the facade
collapses to identities and deepens as for every backend (Milvus's own ``group_by`` is not
used: Milvus Lite over-fetches a fixed 10x and would miss people behind an identity with
many templates).

The package by job: :mod:`.tiers` (which index, its parameters), :mod:`.connection` (a server,
or Milvus Lite's embedded server and its lifetime), :mod:`.schema` (collections, rows and
codecs) and :mod:`.backend` (:class:`MilvusBackend`).
"""

from __future__ import annotations

from .backend import MilvusBackend
from .tiers import (
    AUTO,
    FLAT_MAX_TEMPLATES,
    HNSW_BUILD,
    HNSW_EF,
    LITE_FLAT_MAX_TEMPLATES,
    LITE_HNSW_EF,
    MilvusIndex,
    auto_index,
    parse_index,
)

__all__ = [
    "AUTO",
    "FLAT_MAX_TEMPLATES",
    "HNSW_BUILD",
    "HNSW_EF",
    "LITE_FLAT_MAX_TEMPLATES",
    "LITE_HNSW_EF",
    "MilvusBackend",
    "MilvusIndex",
    "auto_index",
    "parse_index",
]
