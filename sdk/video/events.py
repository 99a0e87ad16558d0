"""What happens to a track, as frozen values: it started, was identified, ended.

Times are seconds since the source's first frame (presentation timestamps); ``wall`` is the
Unix time at which the frame was decoded (for live streams). Every event has ``kind`` and
:meth:`to_dict` (its JSON form, one line of ``npcface video --out``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _at_frame(event: Any) -> dict[str, Any]:
    """The fields every event tied to one frame starts with (started, identified)."""
    return {
        "event": event.kind,
        "track": event.track_id,
        "time": _r(event.time),
        "frame": event.frame,
        "wall": _r(event.wall, 3),
    }


def crop_jpeg(crop: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR crop."""
    import cv2

    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - a (S, S, 3) uint8 array always encodes
        raise ValueError("cannot encode the crop")
    return buf.tobytes()


@dataclass(frozen=True)
class TrackStarted:
    """A face was followed for the first time (from its second detection: ByteTrack
    confirms a track before it names it).

    Attributes:
        track_id: the track's id (positive, never reused within one run).
        time: seconds into the source of the frame it started on.
        frame: that frame's index.
        wall: Unix time that frame was decoded.
        box: (x1, y1, x2, y2) pixels of the face in that frame.
        resumed: the track had ended (its ``ended`` event came) and this face, found
            again within the analyzer's ``relink_after`` seconds, matched it: the same
            person, the same track id (:class:`~npcface.video.VideoAnalyzer`).
    """

    kind: ClassVar[str] = "started"
    track_id: int
    time: float
    frame: int
    wall: float
    box: tuple[float, float, float, float]
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            **_at_frame(self),
            "box": [round(float(v), 1) for v in self.box],
            "resumed": self.resumed,
        }


@dataclass(frozen=True)
class TrackIdentified:
    """A track's template matched a gallery identity (first, or another one than before
    after better faces changed the template).

    Attributes:
        track_id, time, frame, wall: as in :class:`TrackStarted`, for the frame whose faces
            led to the decision.
        identity: the matched identity.
        similarity: cosine similarity of the track's template and the identity's best
            template, in [-1, 1].
        threshold: the decision threshold applied.
        far: the smallest calibrated false-accept rate whose threshold ``similarity``
            reaches (``1e-4`` means "a match at FAR 1e-4"); None when no calibrated
            threshold is reached (only a custom threshold was).
        faces: how many faces the template was made of.
        previous: the identity the track had before (None for its first).
    """

    kind: ClassVar[str] = "identified"
    track_id: int
    time: float
    frame: int
    wall: float
    identity: str
    similarity: float
    threshold: float
    far: float | None
    faces: int
    previous: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **_at_frame(self),
            "identity": self.identity,
            "similarity": _r(self.similarity),
            "threshold": _r(self.threshold),
            "far": self.far,
            "faces": self.faces,
            "previous": self.previous,
        }


@dataclass(frozen=True)
class TrackEnded:
    """A track was not seen for the tracker's ``lost_after`` seconds, or the source ended.

    Attributes:
        track_id: the track's id.
        start, end: seconds into the source of its first and last detection.
        first_frame, last_frame: their frame indices.
        wall: Unix time of its last detection's frame.
        detections: frames in which the face was detected and followed.
        identity: the last identity decided (None: not in the gallery, or no gallery).
        similarity: the similarity of that decision (or, without a match, of the best
            candidate; None without a gallery).
        best_quality: overall :class:`~npcface.results.FaceQuality` of the best face.
        best_crop: the best face's aligned (S, S, 3) uint8 BGR crop (None if no face of the
            track could be embedded).
        template: the track's (d,) unit template (quality-weighted mean of its best faces'
            embeddings), or None.
    """

    kind: ClassVar[str] = "ended"
    track_id: int
    start: float
    end: float
    first_frame: int
    last_frame: int
    wall: float
    detections: int
    identity: str | None
    similarity: float | None
    best_quality: float
    best_crop: np.ndarray | None = None
    template: np.ndarray | None = None

    @property
    def duration(self) -> float:
        """Seconds from its first to its last detection."""
        return self.end - self.start

    def to_dict(self, crop: bool = False) -> dict[str, Any]:
        """JSON form; with ``crop``, the best crop as base64 JPEG (``best_crop_jpeg``)."""
        out: dict[str, Any] = {
            "event": self.kind,
            "track": self.track_id,
            "start": _r(self.start),
            "end": _r(self.end),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "wall": _r(self.wall, 3),
            "detections": self.detections,
            "identity": self.identity,
            "similarity": _r(self.similarity),
            "best_quality": _r(self.best_quality),
        }
        if crop and self.best_crop is not None:
            out["best_crop_jpeg"] = base64.b64encode(crop_jpeg(self.best_crop)).decode("ascii")
        return out


TrackEvent = Union[TrackStarted, TrackIdentified, TrackEnded]  # noqa: UP007
"""Any of the three events."""
