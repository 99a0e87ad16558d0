"""Identity search: nearest templates collapsed to the nearest identities.

An identity may have many templates; a search returns identities, each scored by its best
template, so that several templates of one person never crowd out other people. This module
knows nothing of FAISS or SQLite: it takes a template search and an owner lookup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..results import Match

TemplateSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""(queries (n, d) float32, kk) -> (similarities (n, kk) float32, template ids (n, kk) int64,
owner identity ids (n, kk) int64), best first; -1 ids (and owners) where there is no hit or
the template is deleted (a tombstone). What every backend's ``template_search`` gives."""


def top_identities(
    search: TemplateSearch,
    q: np.ndarray,
    want: int,
    *,
    indexed: int,
    identities: int,
    max_kk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``want`` identities per query as (identity ids, similarities, template ids).

    Searches ``want`` x (indexed vectors per identity) templates, collapses them by identity
    keeping each identity's best template, and searches deeper for the queries that did not
    reach ``want`` distinct live identities (many templates of one person, or tombstones).

    Args:
        search: the template search.
        q: (n, d) queries.
        want: identities per query.
        indexed: vectors in the searched index (tombstones included).
        identities: live identities.
        max_kk: the most templates one search may ask for (Milvus: 16,384); the search
            counts as exhausted there.

    Returns:
        Three (n, want) arrays; rows end in -1 ids (and 0 similarity) when fewer are found.
    """
    nq = len(q)
    if indexed == 0:
        want = 0
    idents = np.full((nq, want), -1, dtype=np.int64)
    sims = np.zeros((nq, want), dtype=np.float32)
    tids = np.full((nq, want), -1, dtype=np.int64)
    limit = min(indexed, max_kk) if max_kk is not None else indexed
    per_identity = math.ceil(indexed / max(identities, 1))
    kk = min(limit, want * per_identity + min(want, 8))
    pending = np.arange(nq) if want else np.zeros(0, np.int64)
    while pending.size:
        dist, labels, owners = search(q[pending], kk)
        again = []
        for row, qi in enumerate(pending):
            valid = np.flatnonzero(owners[row] >= 0)
            _, first = np.unique(owners[row, valid], return_index=True)
            pos = valid[np.sort(first)[:want]]
            exhausted = kk >= limit or labels[row, -1] < 0
            if pos.size < want and not exhausted:
                again.append(qi)
                continue
            n = pos.size
            idents[qi, :n] = owners[row, pos]
            sims[qi, :n] = dist[row, pos]
            tids[qi, :n] = labels[row, pos]
        pending = np.array(again, dtype=np.int64)
        kk = min(limit, kk * 4)
    return idents, sims, tids


def to_matches(
    idents: np.ndarray,
    sims: np.ndarray,
    tids: np.ndarray,
    records: Mapping[int, tuple[str, Mapping[str, Any] | None]],
) -> list[list[Match]]:
    """Rows of :class:`~npcface.results.Match` from :func:`top_identities`' arrays.

    Args:
        records: identity id -> (name, metadata or None) for every id in ``idents``.
    """
    out: list[list[Match]] = []
    for r in range(len(idents)):
        row: list[Match] = []
        for j in range(idents.shape[1]):
            ident = int(idents[r, j])
            if ident < 0:
                break
            name, meta = records[ident]
            row.append(
                Match(
                    identity=name,
                    similarity=float(sims[r, j]),
                    template_id=int(tids[r, j]),
                    metadata=dict(meta) if meta is not None else None,
                )
            )
        out.append(row)
    return out
