"""Faces in videos and camera streams: decoded, tracked, one identity per person.

>>> from npcface import FaceRecognizer, Gallery
>>> from npcface.video import VideoAnalyzer, open_source
>>> rec = FaceRecognizer(preset="fast")  # doctest: +SKIP
>>> with Gallery.open("staff") as g, open_source("door.mp4") as src:  # doctest: +SKIP
...     for result in VideoAnalyzer(rec, g).run(src):
...         for event in result.events:
...             print(event.to_dict())

Needs the ``video`` extra (PyAV to decode, supervision's ByteTrack to track). Nothing is
imported until used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Frame": "source",
    "VideoSource": "source",
    "open_source": "source",
    "FaceTracker": "track",
    "TrackFaces": "template",
    "FaceSample": "template",
    "weighted_template": "template",
    "TrackStarted": "events",
    "TrackIdentified": "events",
    "TrackEnded": "events",
    "VideoAnalyzer": "analyze",
    "FrameResult": "analyze",
    "TrackedFace": "analyze",
    "VideoSummary": "analyze",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
