"""Frames from a video file, a network stream or a camera, with timestamps.

Files and network streams (RTSP, HTTP, UDP, SRT, ...) are decoded by PyAV (FFmpeg's
libraries; the ``video`` extra). PyAV was chosen by measurement over OpenCV's FFmpeg backend:
a 1080p H.264 file decoded to BGR at 139 and 117 frames/s against OpenCV's 113 and 103 (two
alternating runs, 2 shared cores); it also gives the presentation timestamps and encodes
H.264 (``--draw``), which OpenCV's wheels cannot. Cameras (an integer index) are read
through OpenCV's ``VideoCapture``, which knows each platform's camera API.

Live sources (streams, cameras, or a file opened with ``live=True``, which is then played at
its own speed like a camera) are read by a thread into a buffer of ``buffer`` frames. When
the consumer is slower than the source, the oldest waiting frame is dropped: nothing queues
without bound, the newest frame is always the next one, and :attr:`VideoSource.dropped`
counts what was dropped. A file opened normally is read at the consumer's pace and never
drops a frame.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, MissingExtraError, VideoError

log = logging.getLogger(__name__)

STREAM_SCHEMES = (
    "rtsp",
    "rtsps",
    "rtmp",
    "rtmps",
    "http",
    "https",
    "udp",
    "tcp",
    "srt",
    "rtp",
)
"""URL schemes read as live network streams."""

DEFAULT_BUFFER = 4
"""Frames a live source holds for a slow consumer before it drops the oldest."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position among the frames the source decoded (frames dropped on a
            live source count too, so gaps show where frames were dropped).
        time: seconds since the source's first frame, from the presentation timestamps
            (one frame period after the last where a stream carries none; the arrival time for
            cameras).
        image: (H, W, 3) uint8 BGR pixels.
        wall: Unix time (seconds) when the frame was decoded.
    """

    index: int
    time: float
    image: np.ndarray
    wall: float


def require_av() -> Any:
    """The ``av`` module (PyAV).

    Raises:
        MissingExtraError: PyAV is not installed (``pip install 'npcface[video]'``).
    """
    try:
        import av
    except ImportError:
        raise MissingExtraError("video decoding", "video", "av") from None
    return av


def is_stream_url(src: str) -> bool:
    """True for a URL of a network stream (see :data:`STREAM_SCHEMES`)."""
    scheme, sep, _ = src.partition("://")
    return bool(sep) and scheme.lower() in STREAM_SCHEMES


class VideoSource:
    """Iterate :class:`Frame` s of a file, stream or camera; close it (or use ``with``).

    Made by :func:`open_source`. Iterating again continues where the last iteration
    stopped. Thread safety: one consumer; :meth:`close` may be called from any thread and
    ends the iteration.

    Attributes:
        name: the source as given (a path, URL or camera index).
        live: read by a thread with a bounded buffer (frames may be dropped).
        fps: frames per second the source declares (None when unknown).
        size: (width, height) in pixels of the first frame or as declared (None before).
        duration: seconds of a file (None for streams or when unknown).
        frame_count: frames of a file as its container declares (None when unknown).
    """

    def __init__(
        self,
        name: str,
        frames: Iterator[tuple[float | None, np.ndarray]],
        closer: Callable[[], None],
        *,
        live: bool,
        fps: float | None,
        size: tuple[int, int] | None,
        duration: float | None = None,
        frame_count: int | None = None,
        buffer: int = DEFAULT_BUFFER,
        pace: bool = False,
    ) -> None:
        self.name = name
        self.live = live
        self.fps = fps
        self.size = size
        self.duration = duration
        self.frame_count = frame_count
        self._frames = frames
        self._closer = closer
        self._index = 0
        self._t0: float | None = None
        self._last: float | None = None
        self._last_wall = 0.0
        self._dropped = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self._lock = threading.Condition()
        self._queue: collections.deque[Frame] = collections.deque()
        self._buffer = buffer
        self._pace = pace
        self._thread: threading.Thread | None = None
        self._decode_lock = threading.Lock()
        if live:
            self._thread = threading.Thread(
                target=self._read_live, name=f"npcface-video {name}", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ reading
    @property
    def dropped(self) -> int:
        """Frames dropped because the consumer was behind (0 for a file read normally)."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _stamp(self, t: float | None, image: np.ndarray) -> Frame:
        wall = time.time()
        step = 1.0 / self.fps if self.fps else None
        if t is None:  # no timestamp: one frame period (or the arrival gap) after the last
            if self._last is None:
                rel = 0.0
            else:
                rel = self._last + (step if step else wall - self._last_wall)
        else:
            if self._t0 is None:  # the first timestamp continues the frames before it
                self._t0 = t if self._last is None else t - self._last - (step or 0.0)
            rel = t - self._t0
        self._last, self._last_wall = rel, wall
        if self.size is None:
            self.size = (int(image.shape[1]), int(image.shape[0]))
        frame = Frame(self._index, float(max(rel, 0.0)), image, wall)
        self._index += 1
        return frame

    def _read_live(self) -> None:
        start: float | None = None
        try:
            for t, image in self._frames:
                if self._stop.is_set():
                    break
                frame = self._stamp(t, image)
                if self._pace:  # a file played as a camera: at its own speed
                    now = time.monotonic()
                    start = now - frame.time if start is None else start
                    delay = start + frame.time - now
                    if delay > 0 and self._stop.wait(delay):
                        break
                with self._lock:
                    if len(self._queue) >= self._buffer:
                        self._queue.popleft()
                        self._dropped += 1
                    self._queue.append(frame)
                    self._lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            if not self._stop.is_set():
                self._error = exc
        finally:
            self._safe_close()
            with self._lock:
                self._done = True
                self._lock.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        if not self.live:
            yield from self._iter_file()
            return
        while True:
            with self._lock:
                while not self._queue and not self._done and not self._stop.is_set():
                    self._lock.wait(0.5)
                if self._queue:
                    frame = self._queue.popleft()
                elif self._stop.is_set() and not self._done:
                    return
                else:
                    break
            yield frame
        if self._error is not None:
            raise _as_video_error(self._error, self.name)

    def _iter_file(self) -> Iterator[Frame]:
        while True:
            with self._decode_lock:  # close() waits for the decoding step in progress
                if self._stop.is_set():
                    return
                try:
                    t, image = next(self._frames)
                except StopIteration:
                    return
                except VideoError:
                    raise
                except Exception as exc:
                    raise _as_video_error(exc, self.name) from exc
            yield self._stamp(t, image)

    # ------------------------------------------------------------------ closing
    def _safe_close(self) -> None:
        try:
            self._closer()
        except Exception:  # noqa: BLE001 - closing what may be half open
            log.debug("closing %s failed", self.name, exc_info=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading and release the source (waits up to ``timeout`` s for the reader
        thread of a live source)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
        else:
            with self._decode_lock:
                self._safe_close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "live" if self.live else "file"
        return f"VideoSource({self.name!r}, {kind}, fps={self.fps}, size={self.size})"


def _as_video_error(exc: BaseException, name: str) -> BaseException:
    if isinstance(exc, VideoError):
        return exc
    if not isinstance(exc, Exception):
        return exc
    err = VideoError(f"{name}: cannot read the video: {exc}", input=name)
    err.__cause__ = exc
    return err


# ---------------------------------------------------------------------- opening
def open_source(
    src: str | int | os.PathLike[str],
    *,
    live: bool | None = None,
    buffer: int = DEFAULT_BUFFER,
    timeout: float = 10.0,
    options: Mapping[str, str] | None = None,
) -> VideoSource:
    """Open a video file, a network stream or a camera.

    Args:
        src: a file path; a stream URL (``rtsp://``, ``http://``, ``udp://``, ... see
            :data:`STREAM_SCHEMES`); or a camera index (an int, or a string of digits).
        live: read by a thread with a bounded buffer, dropping the oldest frame when the
            consumer is behind. Default: True for streams and cameras, False for files (a
            file opened live is played at its own frame rate, as a camera would deliver
            it).
        buffer: frames a live source holds (>= 1).
        timeout: seconds to wait for a stream to open and for each read before giving up
            (0 waits for ever).
        options: FFmpeg options for the demuxer (e.g. ``{"rtsp_transport": "udp"}``,
            ``{"rtsp_flags": "listen"}`` to receive a stream pushed to this address).

    Returns:
        The opened :class:`VideoSource`.

    Raises:
        VideoError: the file is missing or holds no video, the stream cannot be reached,
            no camera at that index.
        InvalidArgumentError: bad ``buffer`` or ``timeout``.
        MissingExtraError: PyAV is not installed (files and streams).
    """
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise InvalidArgumentError(f"buffer must be an int >= 1, got {buffer!r}", input="buffer")
    if not isinstance(timeout, (int, float)) or timeout < 0:
        raise InvalidArgumentError(f"timeout must be >= 0 seconds, got {timeout!r}")
    if isinstance(src, bool):
        raise InvalidArgumentError(f"not a video source: {src!r}", input="source")
    if isinstance(src, int) or (isinstance(src, str) and src.isdigit()):
        return _open_camera(int(src), buffer=buffer)
    name = os.fspath(src)
    stream = is_stream_url(name)
    if not stream:
        path = Path(name)
        if not path.exists():
            raise VideoError(f"{name}: no such file", input=name)
        if path.is_dir():
            raise VideoError(f"{name}: is a folder, not a video", input=name)
    is_live = stream if live is None else bool(live)
    return _open_pyav(
        name,
        stream=stream,
        live=is_live,
        buffer=buffer,
        timeout=timeout,
        options=dict(options or {}),
    )


def _open_pyav(
    name: str,
    *,
    stream: bool,
    live: bool,
    buffer: int,
    timeout: float,
    options: dict[str, str],
) -> VideoSource:
    av = require_av()
    opts = dict(options)
    if name.lower().startswith(("rtsp://", "rtsps://")):
        opts.setdefault("rtsp_transport", "tcp")
    listening = opts.get("rtsp_flags") == "listen" or opts.get("listen") == "1"
    if listening and timeout:
        opts.setdefault("listen_timeout", str(int(max(timeout, 1))))
    # PyAV's timeout interrupts blocking calls; a listening RTSP demuxer has its own
    kwargs: dict[str, Any] = {}
    if stream and timeout and not listening:
        kwargs["timeout"] = (float(timeout), float(timeout))
    try:
        container = av.open(name, options=opts, **kwargs)
    except av.error.FFmpegError as exc:
        what = "stream" if stream else "file"
        raise VideoError(f"{name}: cannot open the {what}: {exc}", input=name) from exc
    if not container.streams.video:
        container.close()
        raise VideoError(
            f"{name}: holds no video stream (a still image? use the still-image commands)",
            input=name,
        )
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"  # frame and slice threads: the decoder uses every core
    fps = float(vs.average_rate) if vs.average_rate else None
    duration = None
    if vs.duration is not None and vs.time_base is not None:
        duration = float(vs.duration * vs.time_base)
    elif container.duration is not None and not stream:
        duration = container.duration / 1_000_000
    size = (vs.codec_context.width, vs.codec_context.height) if vs.codec_context.width else None

    def frames() -> Iterator[tuple[float | None, np.ndarray]]:
        for frame in container.decode(vs):
            yield frame.time, frame.to_ndarray(format="bgr24")

    return VideoSource(
        name,
        frames(),
        container.close,
        live=live,
        fps=fps,
        size=size,
        duration=None if stream else duration,
        frame_count=(vs.frames or None) if not stream else None,
        buffer=buffer,
        pace=live and not stream,
    )


def _open_camera(index: int, *, buffer: int) -> VideoSource:
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"camera {index}: cannot be opened (no camera at that index?)")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def frames() -> Iterator[tuple[float | None, np.ndarray]]:
        while True:
            ok, image = cap.read()
            if not ok:
                raise VideoError(f"camera {index}: stopped delivering frames")
            yield time.monotonic(), image  # the arrival time: cameras give no reliable clock

    return VideoSource(
        str(index),
        frames(),
        cap.release,
        live=True,
        fps=fps,
        size=(w, h) if w and h else None,
        buffer=buffer,
    )
