"""Where a person appears in recorded footage: time ranges from the tracks that ended.

A track's template (the quality-weighted mean of its best faces' embeddings) is compared
with the person's embedding; the tracks at or above the threshold give time ranges, and
ranges closer than ``gap`` seconds are merged (a person occluded for a moment, or followed
by two tracks one after the other, is one appearance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .events import TrackEnded


@dataclass(frozen=True)
class Appearance:
    """One stretch of time a person is seen.

    Attributes:
        start, end: seconds into the source.
        tracks: the ids of the tracks that make it up.
        similarity: the best similarity among them (template to person), in [-1, 1].
    """

    start: float
    end: float
    tracks: tuple[int, ...]
    similarity: float

    def to_dict(self) -> dict[str, object]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "tracks": list(self.tracks),
            "similarity": round(self.similarity, 4),
        }


def merge_ranges(items: Iterable[tuple[float, float, int, float]], gap: float) -> list[Appearance]:
    """(start, end, track, similarity) items merged where they overlap or lie at most
    ``gap`` seconds apart, in time order."""
    out: list[Appearance] = []
    for start, end, track, sim in sorted(items):
        if out and start <= out[-1].end + gap:
            last = out[-1]
            out[-1] = Appearance(
                last.start, max(last.end, end), (*last.tracks, track), max(last.similarity, sim)
            )
        else:
            out.append(Appearance(start, end, (track,), sim))
    return out


def find_person(
    tracks: Sequence[TrackEnded], embedding: np.ndarray, threshold: float, gap: float = 1.0
) -> list[Appearance]:
    """The time ranges in which the person of ``embedding`` appears.

    Args:
        tracks: the ``ended`` events of a run (each carries its template).
        embedding: (d,) unit embedding of the person (e.g. ``rec.embed(photo)``).
        threshold: cosine threshold of a match (e.g. ``rec.decision_threshold()``).
        gap: seconds between two ranges that still makes them one.

    Returns:
        Appearances in time order (empty when the person is not seen).
    """
    e = np.asarray(embedding, np.float32).reshape(-1)
    hits = []
    for t in tracks:
        if t.template is None:
            continue
        sim = float(np.dot(t.template, e))
        if sim >= threshold:
            hits.append((t.start, t.end, t.track_id, sim))
    return merge_ranges(hits, gap)


def appearances_by_identity(
    tracks: Sequence[TrackEnded], gap: float = 1.0
) -> dict[str, list[Appearance]]:
    """For each identity the gallery gave tracks, the time ranges it appears in."""
    by: dict[str, list[tuple[float, float, int, float]]] = {}
    for t in tracks:
        if t.identity is not None:
            by.setdefault(t.identity, []).append(
                (t.start, t.end, t.track_id, float(t.similarity or 0.0))
            )
    return {k: merge_ranges(v, gap) for k, v in sorted(by.items())}
