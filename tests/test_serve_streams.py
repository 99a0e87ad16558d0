"""Stream monitors in the service (uvicorn on loopback): start, list, stop, the limit, SSE
events, the bounded recent list, the JPEG and MJPEG previews, restart with back-off after a
stream is missing, and the page's preview in the real headless Chromium. The stream is the
composed clip served for ever by ffmpeg over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("av")
pytest.importorskip("supervision")
import httpx  # noqa: E402
from video_clips import free_port, http_endless, make_clip, make_gallery  # noqa: E402

from npcface import FaceRecognizer  # noqa: E402
from npcface.errors import TooManyStreamsError  # noqa: E402
from npcface.serve import Settings, create_app  # noqa: E402
from npcface.serve.background import BackgroundServer  # noqa: E402
from npcface.serve.streams import MonitorOptions  # noqa: E402
from npcface.wire import exception_from  # noqa: E402

CHROMIUM = Path(os.environ.get("NPCFACE_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def fast():
    return FaceRecognizer(preset="fast")


@pytest.fixture(scope="module")
def served(fast, tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    clip = make_clip(fast, root)
    make_gallery(fast, root / "galleries" / "people").close()
    app = create_app(Settings(gallery_root=root / "galleries"), recognizer=fast)
    with BackgroundServer(app) as srv:
        yield srv, app, clip


def _wait(fn, seconds=60.0, every=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def test_monitor_routes_events_and_previews(served):
    srv, app, clip = served
    url = srv.url
    with http_endless(clip.path, free_port()) as stream:
        r = httpx.post(f"{url}/v1/streams", json={"source": stream, "gallery": "people"})
        assert r.status_code == 201, r.text
        mid = r.json()["id"]
        app.state.streams.limit = 1
        r2 = httpx.post(f"{url}/v1/streams", json={"source": stream})
        assert r2.status_code == 429 and r2.json()["error"] == "too_many_streams"
        assert type(exception_from(r2.json(), 429)) is TooManyStreamsError
        assert [m["id"] for m in httpx.get(f"{url}/v1/streams").json()["streams"]] == [mid]
        # Server-Sent Events: read until both people are identified
        seen: dict[str, dict] = {}
        with httpx.stream("GET", f"{url}/v1/streams/{mid}/events", timeout=60) as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in sse.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "identified":
                    data = json.loads(line[6:])
                    seen[data["identity"]] = data
                    if len(seen) == 2:
                        break
        assert set(seen) == {"astronaut", "hopper"}
        recent = httpx.get(f"{url}/v1/streams/{mid}/recent").json()
        kinds = [e["event"] for e in recent["events"]]
        assert "started" in kinds and "identified" in kinds
        seqs = [e["seq"] for e in recent["events"]]
        assert seqs == sorted(seqs) and recent["last"] == seqs[-1]
        later = httpx.get(f"{url}/v1/streams/{mid}/recent", params={"after": seqs[-2]}).json()
        assert [e["seq"] for e in later["events"]][:1] == [seqs[-1]]
        # the latest annotated frame, and MJPEG parts
        jpg = httpx.get(f"{url}/v1/streams/{mid}/preview.jpg")
        assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
        import cv2

        img = cv2.imdecode(np.frombuffer(jpg.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (240, 320, 3)
        with httpx.stream("GET", f"{url}/v1/streams/{mid}/preview.mjpg", timeout=30) as mj:
            assert "multipart/x-mixed-replace" in mj.headers["content-type"]
            got = b""
            for chunk in mj.iter_bytes():
                got += chunk
                if got.count(b"--frame") >= 2:
                    break
        assert got.count(b"\xff\xd8") >= 1  # JPEG start markers
        info = httpx.get(f"{url}/v1/streams/{mid}").json()
        assert info["state"] == "running" and info["frames"] > 0 and info["identified"] >= 2
        stopped = httpx.delete(f"{url}/v1/streams/{mid}")
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        assert httpx.get(f"{url}/v1/streams/{mid}").status_code == 404
        app.state.streams.limit = 4


def test_monitor_restarts_with_back_off_until_the_stream_is_up(served):
    """Nothing listens at first: the monitor fails, waits 0.2, 0.4, 0.8 s ... and tries
    again; once ffmpeg serves the stream, it runs and identifies."""
    srv, app, clip = served
    port = free_port()
    stream = f"http://127.0.0.1:{port}/cam.ts"
    m = app.state.streams.start(
        MonitorOptions(source=stream, gallery="people", backoff_s=0.2, backoff_max_s=0.8)
    )
    try:
        info = _wait(
            lambda: (d := httpx.get(f"{srv.url}/v1/streams/{m.id}").json())["restarts"] >= 3 and d
        )
        assert info["state"] in ("reconnecting", "starting") and "cannot open" in info["last_error"]
        with http_endless(clip.path, port):
            _wait(lambda: httpx.get(f"{srv.url}/v1/streams/{m.id}").json()["identified"] >= 1)
    finally:
        app.state.streams.stop(m.id)


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "api-key"])
def test_page_shows_a_monitors_preview_and_events(served, fast, tmp_path, keyed):
    """The page starts a monitor, shows its MJPEG preview and its events, and stops it. On
    a service that requires an API key, the page reads both with the key in the
    Authorization header (fetch), and no request carries the key in its URL."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_serve_page import FLAGS

    from npcface.serve.auth import new_key

    srv, _, clip = served
    key = None
    with contextlib.ExitStack() as stack:
        if keyed:  # a service of its own, with a read-write key and the same gallery
            key, line = new_key("write")
            (tmp_path / "keys.txt").write_text(line + "\n")
            make_gallery(fast, tmp_path / "galleries" / "people").close()
            settings = Settings(
                gallery_root=tmp_path / "galleries", api_key_file=tmp_path / "keys.txt"
            )
            srv = stack.enter_context(BackgroundServer(create_app(settings, recognizer=fast)))
        stream = stack.enter_context(http_endless(clip.path, free_port()))
        pw = stack.enter_context(sync_api.sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        stack.callback(browser.close)
        page = browser.new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(f"{srv.url}/")
        if key:
            page.fill("#api-key", key)
            page.dispatch_event("#api-key", "change")
        page.fill("#stream-source", stream)
        page.wait_for_function(
            "[...document.querySelector('#stream-gallery').options].some(o => o.value === 'people')"
        )
        page.select_option("#stream-gallery", "people")
        page.click("#stream-start")
        # the MJPEG preview shows frames of the stream, at its size
        page.wait_for_function(
            "document.querySelector('#stream-preview').naturalWidth === 320", timeout=60_000
        )
        page.wait_for_selector("#stream-events li[data-event='identified']", timeout=60_000)
        text = page.inner_text("#stream-events")
        assert "astronaut" in text or "hopper" in text
        assert not page.query_selector("#stream-events li.error"), text
        (mid,) = [m["id"] for m in _get(srv.url, "/v1/streams", key).json()["streams"]]
        if key:  # without the key the preview and the events are refused
            for what in ("preview.mjpg", "events"):
                assert httpx.get(f"{srv.url}/v1/streams/{mid}/{what}").status_code == 401
            assert not [u for u in urls if key in u], "the key went into a URL"
            assert any(u.endswith(f"/v1/streams/{mid}/events") for u in urls)
        page.click("#stream-stop")
        page.wait_for_function("document.querySelector('#stream-preview').hidden")
        assert _get(srv.url, "/v1/streams", key).json()["streams"] == []


def _get(url: str, path: str, key: str | None) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
