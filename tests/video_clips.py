"""Test material for the video tests: a short H.264 clip composed from two photos that ship
in packages (scikit-image's astronaut, matplotlib's Grace Hopper), a gallery of the two
people made from other pictures of them, and ffmpeg serving the clip over RTSP and as an
endless HTTP stream on loopback ports."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FPS = 25.0
SIZE = (320, 240)
SECONDS = 3.6


def package_photo(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"the sample photo needs the {package} package (the dev extra)")
    return Path(spec.submodule_search_locations[0]) / relative


def photos() -> dict[str, np.ndarray]:
    from npcface import load_image

    return {
        "astronaut": load_image(package_photo("skimage", "data/astronaut.png")),
        "hopper": load_image(package_photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")),
    }


def other_pictures(img: np.ndarray) -> list[np.ndarray]:
    """Two other pictures of the same face: mirrored, rotated and shrunk; and brightened."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 8, 0.7)
    turned = cv2.warpAffine(cv2.flip(img, 1), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    bright = cv2.convertScaleAbs(img, alpha=1.15, beta=12)
    return [turned, bright]


@dataclass
class Clip:
    path: Path
    truth: list  # TruthBox
    frames: int
    fps: float
    actors: list  # Actor
    scene: object


def make_clip(rec, folder: Path, *, size=SIZE, fps=FPS, seconds=SECONDS, name="clip.mp4") -> Clip:
    """Astronaut walks left to right; Grace Hopper enters later from the right and walks
    left, passing in front of her (an occlusion); both leave before the end."""
    from npcface.eval.videoset import Actor, Scene

    imgs = photos()

    def box(img: np.ndarray) -> tuple[float, float, float, float]:
        face = rec.detect(img)[0]
        return tuple(float(v) for v in face.box)  # type: ignore[return-value]

    actors = [
        Actor("astronaut", (imgs["astronaut"],), (box(imgs["astronaut"]),), 0.2, 3.0,
              (0.22, 0.42), (0.75, 0.48), (0.36, 0.30)),
        Actor("hopper", (imgs["hopper"],), (box(imgs["hopper"]),), 0.6, 3.4,
              (0.85, 0.55), (0.18, 0.50), (0.30, 0.40)),
    ]  # fmt: skip
    scene = Scene(actors, size[0], size[1], fps, seconds, seed=3)
    path = folder / name
    truth = scene.write(path)
    return Clip(path, truth, scene.frames, fps, actors, scene)


def make_gallery(rec, path: Path):
    from npcface import Gallery

    g = Gallery.create(str(path), dim=rec.info.embedding_size, model=rec.info.name)
    for name, img in photos().items():
        rec.enroll(g, name, other_pictures(img))
    return g


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg; .ci/run does)")
    return exe


@contextlib.contextmanager
def rtsp_push(clip: Path, url: str, *, realtime: bool = True) -> Iterator[threading.Thread]:
    """ffmpeg sends ``clip`` over RTSP (TCP) to ``url``, where the test listens
    (``open_source(url, options={"rtsp_flags": "listen"})``); retried until the listener
    is up."""
    exe = need_ffmpeg()
    procs: list[subprocess.Popen] = []
    stop = threading.Event()

    def push() -> None:
        for _ in range(100):
            if stop.is_set():
                return
            cmd = [exe, "-loglevel", "error", "-nostdin"]
            cmd += ["-re"] if realtime else []
            cmd += ["-i", str(clip), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            _, err = p.communicate()
            if p.returncode == 0 or b"Connection refused" not in err:
                return
            time.sleep(0.1)

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        thread.join(10)


@contextlib.contextmanager
def rtsp_served(clip: Path) -> Iterator[str]:
    """``clip`` served over RTSP for readers to pull, on loopback ports:
    ``rtsp-server-perl`` (Debian's RTSP relay; ffmpeg itself has no RTSP server for
    playback, only a receiving ``-rtsp_flags listen`` mode) takes the stream that ffmpeg
    publishes to it (the clip looped for ever, at its frame rate, H.264 with a keyframe
    every 10 frames so a reader that joins late starts soon) and serves it at the
    returned ``rtsp://127.0.0.1:PORT/live`` (RTP over UDP: the relay has no TCP
    transport). Open it with :func:`open_when_up` and ``{"rtsp_transport": "udp"}``."""
    exe = need_ffmpeg()
    relay = shutil.which("rtsp-server-perl")
    if relay is None:
        pytest.skip("no RTSP server to pull from (apt-get install rtsp-server-perl; .ci/run does)")
    client, source = free_port(), free_port()
    rtp = 20000 + 2 * (source % 10000)  # an even port pair per run, away from the free ones
    procs = [
        subprocess.Popen(
            [relay, "--clientport", str(client), "--serverport", str(source)]
            + ["--rtp_start_port", str(rtp), "--loglevel", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 10
        while True:  # the relay takes a second to start (Perl and Moose)
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", source)) == 0:
                    break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("rtsp-server-perl did not start")
            time.sleep(0.1)
        cmd = [exe, "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1"]
        cmd += ["-i", str(clip), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10"]
        cmd += ["-f", "rtsp", f"rtsp://127.0.0.1:{source}/live"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield f"rtsp://127.0.0.1:{client}/live"
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
            p.wait()


@contextlib.contextmanager
def http_endless(clip: Path, port: int) -> Iterator[str]:
    """ffmpeg serves ``clip`` looped for ever, at its own speed, as an MPEG-TS stream on
    ``http://127.0.0.1:port/cam.ts`` (a camera-like source that never ends); open it with
    :func:`open_when_up`."""
    exe = need_ffmpeg()
    url = f"http://127.0.0.1:{port}/cam.ts"
    cmd = [exe, "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip)]
    cmd += ["-c", "copy", "-f", "mpegts", "-listen", "1", url]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield url
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def open_when_up(url: str, seconds: float = 10.0, **kwargs):
    """``open_source(url)``, retried while the server is not listening yet."""
    from npcface.errors import VideoError
    from npcface.video import open_source

    deadline = time.monotonic() + seconds
    while True:
        try:
            return open_source(url, **kwargs)
        except VideoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
