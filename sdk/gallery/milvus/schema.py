"""How a gallery is laid out in Milvus: its two collections, the rows of its settings and
identities, and the codecs of names, metadata and filter expressions."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import (
    GalleryError,
)
from .tiers import (
    MilvusIndex,
    _index_params,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

MAX_TOPK = 16_384
"""Milvus answers at most this many hits per query."""

MAX_NAME_LENGTH = 1024

MAX_SOURCE_LENGTH = 4096

INSERT_BATCH = 5_000

_SETTINGS_KEY = 0

_DUMMY = [1.0, 0.0]  # Milvus wants a vector in every collection; the meta rows carry this one


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


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0
