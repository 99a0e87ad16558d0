"""Stream monitors: a video stream or camera watched in a thread of the service, its faces
tracked and identified against a gallery (:mod:`npcface.video`).

Each monitor keeps a bounded list of recent events (numbered, for Server-Sent Events and
their ``Last-Event-ID``), its figures, and the latest annotated frame as a JPEG for the
MJPEG preview (encoded at most :data:`PREVIEW_FPS` times a second, at most
:data:`PREVIEW_SIDE` pixels wide, so a preview costs little whether anyone watches). A
stream that fails or ends is opened again after a back-off that doubles from
``backoff_s`` up to ``backoff_max_s`` (reset once a stream runs for a minute); the service
runs at most ``limit`` monitors.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NpcfaceError, RouteNotFoundError, TooManyStreamsError

log = logging.getLogger(__name__)

PREVIEW_FPS = 5.0
PREVIEW_SIDE = 640
RECENT = 200
"""Events a monitor keeps for late readers."""


@dataclass
class MonitorOptions:
    """What a monitor watches and how (see :class:`~npcface.video.VideoAnalyzer`)."""

    source: str
    gallery: str | None = None
    every: int = 1
    threshold: float | None = None
    far: float | None = None
    listen: bool = False
    buffer: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0


@dataclass
class Monitor:
    """One watched stream and what it saw."""

    id: str
    options: MonitorOptions
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    frames: int = 0
    dropped: int = 0
    tracks: int = 0
    identified: int = 0
    started: float = field(default_factory=time.time)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    jpeg: bytes | None = None
    jpeg_seq: int = 0
    seq: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    source: Any = None
    thread: threading.Thread | None = None

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "id": self.id,
            "source": o.source,
            "gallery": o.gallery,
            "every": o.every,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "frames": self.frames,
            "dropped": self.dropped,
            "tracks": self.tracks,
            "identified": self.identified,
            "started": round(self.started, 3),
            "events": self.seq,
        }

    def recent(self, after: int = 0) -> list[dict[str, Any]]:
        """Events numbered above ``after`` still kept, oldest first."""
        return [e for e in list(self.events) if e["seq"] > after]


class StreamManager:
    """The service's stream monitors.

    Args:
        recognizer: a callable returning the service's recogniser (loaded in its
            lifespan).
        gallery_root: folder of the service's galleries.
        limit: most monitors at once.
    """

    def __init__(self, recognizer: Any, gallery_root: Path, limit: int = 4) -> None:
        self._recognizer = recognizer
        self.root = Path(gallery_root)
        self.limit = int(limit)
        self._monitors: dict[str, Monitor] = {}
        self._lock = threading.Lock()

    def start(self, options: MonitorOptions) -> Monitor:
        """Start watching a stream.

        Raises:
            TooManyStreamsError: ``limit`` monitors run already.
            GalleryError: the gallery does not exist. InvalidArgumentError: bad options.
        """
        from ..video.analyze import VideoAnalyzer

        rec = self._recognizer()
        gallery = self._open_gallery(options.gallery)
        try:  # the options are checked before anything starts
            VideoAnalyzer(
                rec, gallery, every=options.every, threshold=options.threshold, far=options.far
            )
        except BaseException:
            if gallery is not None:
                gallery.close()
            raise
        with self._lock:
            running = [m for m in self._monitors.values() if m.state != "stopped"]
            if len(running) >= self.limit:
                if gallery is not None:
                    gallery.close()
                raise TooManyStreamsError(
                    f"{len(running)} stream monitors run already, the most this service runs "
                    "(stop one first)",
                    input="source",
                )
            m = Monitor(uuid.uuid4().hex[:12], options)
            self._monitors[m.id] = m
        m.thread = threading.Thread(
            target=self._run, args=(m, rec, gallery), name=f"npcface-stream {m.id}", daemon=True
        )
        m.thread.start()
        return m

    def _open_gallery(self, name: str | None) -> Any:
        if name is None:
            return None
        from ..gallery import Gallery

        return Gallery.open(str(self.root / name), readonly=True)

    def get(self, monitor_id: str) -> Monitor:
        with self._lock:
            m = self._monitors.get(monitor_id)
        if m is None:
            raise RouteNotFoundError(f"no stream monitor {monitor_id!r}", input="id")
        return m

    def list(self) -> list[Monitor]:
        with self._lock:
            return list(self._monitors.values())

    def stop(self, monitor_id: str, timeout: float = 10.0) -> Monitor:
        """Stop a monitor (its open tracks end) and forget it."""
        m = self.get(monitor_id)
        m.stop.set()
        src = m.source
        if src is not None:
            src.close()
        if m.thread is not None:
            m.thread.join(timeout)
        with self._lock:
            self._monitors.pop(monitor_id, None)
        return m

    def close(self) -> None:
        for m in self.list():
            self.stop(m.id, timeout=5.0)

    # ------------------------------------------------------------------ the thread
    def _run(self, m: Monitor, rec: Any, gallery: Any) -> None:
        from ..video.analyze import VideoAnalyzer
        from ..video.source import open_source

        o = m.options
        backoff = o.backoff_s
        try:
            while not m.stop.is_set():
                began = time.monotonic()
                try:
                    opts = {"rtsp_flags": "listen"} if o.listen else None
                    m.source = open_source(o.source, buffer=o.buffer, options=opts, live=True)
                    if m.stop.is_set():
                        break
                    m.state = "running"
                    analyzer = VideoAnalyzer(
                        rec, gallery, every=o.every, threshold=o.threshold, far=o.far
                    )
                    self._watch(m, analyzer)
                    if m.stop.is_set():
                        break
                    m.last_error = "the stream ended"
                except NpcfaceError as exc:
                    if m.stop.is_set():
                        break
                    m.last_error = str(exc)
                    log.warning("stream monitor %s: %s", m.id, exc)
                except Exception as exc:  # noqa: BLE001 - a monitor must not die silently
                    m.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("stream monitor %s failed", m.id)
                finally:
                    if m.source is not None:
                        m.source.close()
                if time.monotonic() - began > 60:
                    backoff = o.backoff_s
                m.state = "reconnecting"
                m.restarts += 1
                if m.stop.wait(backoff):
                    break
                backoff = min(backoff * 2, o.backoff_max_s)
        finally:
            m.state = "stopped"
            if gallery is not None:
                gallery.close()

    def _watch(self, m: Monitor, analyzer: Any) -> None:
        last_preview = 0.0
        counter = itertools.count(1)
        for result in analyzer.run(m.source, m.stop):
            for event in result.events:
                m.seq += 1
                m.events.append({"seq": m.seq, "monitor": m.id, **event.to_dict()})
            s = analyzer.summary()
            m.frames, m.tracks = (
                m.frames + (result.frame is not None),
                m.tracks + sum(e.kind == "started" for e in result.events),
            )
            m.identified += sum(
                e.kind == "identified" and e.previous is None for e in result.events
            )
            m.dropped = s.dropped
            now = time.monotonic()
            if result.frame is not None and now - last_preview >= 1.0 / PREVIEW_FPS:
                last_preview = now
                m.jpeg = _preview(result)
                m.jpeg_seq = next(counter)


def _preview(result: Any) -> bytes:
    import cv2

    from ..video.draw import annotate

    img = annotate(result.frame.image, result.faces)
    side = max(img.shape[:2])
    if side > PREVIEW_SIDE:
        s = PREVIEW_SIDE / side
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""
