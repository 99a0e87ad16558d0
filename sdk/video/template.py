"""A track's best faces and its template.

Each track keeps its ``keep`` best faces by :class:`~npcface.results.FaceQuality` overall
figure, and one template: the quality-weighted mean of their embeddings, normalised to unit
length. Only a face that enters the best ``keep`` is embedded, so a track costs ``keep``
embeddings and then one per clearly better face (``margin``), whatever its length. Weighting
by quality follows the quality figure's own evidence (low-quality faces pass genuine
comparisons less often, :class:`~npcface.results.FaceQuality`); averaging the unit
embeddings of several faces of one person is how multi-image templates are usually built
(e.g. the IJB-B/C template protocol of Whitelam et al. 2017 and Maze et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_FLOOR = 0.02
"""Weight of a face of quality 0 (so that a track of only poor faces still has a template)."""


@dataclass(frozen=True)
class FaceSample:
    """One face of a track.

    Attributes:
        quality: overall quality in [0, 1].
        time: seconds into the source.
        frame: frame index.
        crop: aligned (S, S, 3) uint8 BGR crop.
        embedding: (d,) unit embedding.
    """

    quality: float
    time: float
    frame: int
    crop: np.ndarray
    embedding: np.ndarray


class TrackFaces:
    """The best faces of one track and their template.

    Args:
        keep: faces kept (>= 1).
        margin: once ``keep`` faces are held, a face replaces the worst only when its
            quality is higher by more than this.
    """

    def __init__(self, keep: int = 5, margin: float = 0.05) -> None:
        self.keep = int(keep)
        self.margin = float(margin)
        self.samples: list[FaceSample] = []  # best first
        self._template: np.ndarray | None = None

    def wants(self, quality: float) -> bool:
        """Would a face of this quality be kept (and so be worth embedding)?"""
        if len(self.samples) < self.keep:
            return True
        return quality > self.samples[-1].quality + self.margin

    def add(self, sample: FaceSample) -> bool:
        """Keep ``sample`` if it is among the best; True when the template changed."""
        if not self.wants(sample.quality):
            return False
        self.samples.append(sample)
        self.samples.sort(key=lambda s: -s.quality)
        del self.samples[self.keep :]
        self._template = None
        return True

    @property
    def best(self) -> FaceSample | None:
        return self.samples[0] if self.samples else None

    @property
    def template(self) -> np.ndarray | None:
        """(d,) unit vector: sum of w_i * e_i over the kept faces, normalised, with
        w_i = max(quality_i, :data:`WEIGHT_FLOOR`); None before the first face."""
        if self._template is None and self.samples:
            self._template = weighted_template(
                np.stack([s.embedding for s in self.samples]),
                np.array([s.quality for s in self.samples]),
            )
        return self._template


def weighted_template(embeddings: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Quality-weighted mean of (n, d) unit embeddings, normalised to a (d,) unit vector.

    Args:
        embeddings: (n, d) float embeddings (n >= 1).
        qualities: (n,) overall qualities in [0, 1]; each weight is
            ``max(quality, WEIGHT_FLOOR)``.
    """
    w = np.maximum(np.asarray(qualities, np.float64), WEIGHT_FLOOR)
    t = (w[:, None] * np.asarray(embeddings, np.float64)).sum(axis=0)
    n = np.linalg.norm(t)
    if n < 1e-12:  # opposite embeddings cancel: fall back to the best face
        t = np.asarray(embeddings[int(np.argmax(w))], np.float64)
        n = max(float(np.linalg.norm(t)), 1e-12)
    return (t / n).astype(np.float32)
