"""Which Milvus index a gallery uses, and its build and search parameters: the tiers of
``auto`` (measured on real faces, see ``sdk/gallery/README.md``) and the checks of explicit
choices."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import (
    GalleryError,
)

log = logging.getLogger(__name__)


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

HNSW_EF = ((200_000, 256), (500_000, 512))
"""(up to this many templates, ``ef``) for HNSW searches on a server; 1024 beyond. Measured
on a Milvus 2.3.5 standalone server with real faces (``bench/gallery_scale.py --milvus``, see
``sdk/gallery/README.md``), share of exact search's rank-1 at ef 128 / 256 / 512 / 1024: at
100k templates 0.987 / 0.996 / 0.999 / 1.000; at 1M (segments of ~500k rows, one graph each)
0.909 / 0.965 / 0.989 / 0.998. The 500k step between the two is interpolated, not measured;
beyond 1M nothing was measured (a larger gallery may need more than 1024)."""

LITE_HNSW_EF = 256
"""``ef`` of an HNSW index chosen explicitly on Milvus Lite (its graphs never exceed one
100k-row segment; 0.992 of exact search's rank-1 there)."""

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
