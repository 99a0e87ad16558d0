"""The page at ``/`` in a real headless Chromium (Debian's package, driven by Playwright):
two LFW photos dropped on it are verified, one is identified against a gallery."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest import REPO, lfw_image  # noqa: E402

from npcface.client import Client  # noqa: E402
from npcface.serve import Settings, create_app  # noqa: E402
from npcface.serve.background import BackgroundServer  # noqa: E402

CHROMIUM = Path(os.environ.get("NPCFACE_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "out" / "serve_page.png"  # /out/ is git-ignored

DROP_JS = """([b64, name, type]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type }));
  return dt;
}"""


def _drop(page, selector: str, path: Path) -> None:
    """Drop a file on an element the way a user's drag and drop does (a drop event)."""
    _drop_bytes(page, selector, path.read_bytes(), path.name, "image/jpeg")


def _drop_bytes(page, selector: str, data: bytes, name: str, mime: str) -> None:
    dt = page.evaluate_handle(DROP_JS, [base64.b64encode(data).decode(), name, mime])
    page.dispatch_event(selector, "drop", {"dataTransfer": dt})


NOT_AN_IMAGE = b"minutes of the meeting, not a photo\n" * 20


def test_page_verifies_and_identifies_dropped_photos(recognizer, lfw_dir, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    a = lfw_image(lfw_dir, "Aaron_Peirsol", 1)
    b = lfw_image(lfw_dir, "Aaron_Peirsol", 2)
    app = create_app(Settings(gallery_root=tmp_path / "galleries"), recognizer=recognizer)
    with BackgroundServer(app) as srv, sync_api.sync_playwright() as pw:
        g = Client(srv.url).create_gallery("team")
        g.enroll("Aaron Peirsol", [a])
        g.enroll("Abel Pacheco", [lfw_image(lfw_dir, "Abel_Pacheco", 1)])
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(f"{srv.url}/")
            _drop(page, "#drop1", a)
            _drop(page, "#drop2", b)
            result = page.wait_for_selector("#verify-result[data-verified]", timeout=60_000)
            want = recognizer.verify(a, b)
            assert want.verified
            assert result.get_attribute("data-verified") == "true"
            text = result.inner_text()
            assert text.startswith("Same person")
            assert f"{want.similarity:.3f}" in text and f"{want.threshold:.3f}" in text

            page.wait_for_function("document.querySelector('#gallery').value === 'team'")
            _drop(page, "#drop3", lfw_image(lfw_dir, "Aaron_Peirsol", 3))
            page.wait_for_function(
                "document.querySelector('#identify-result').innerText.includes('Face 1:')",
                timeout=60_000,
            )
            assert "Aaron Peirsol" in page.inner_text("#identify-result")
            # the photos are drawn, boxes included, at the image's own size
            width = page.evaluate("document.querySelector('#canvas1').width")
            assert width == 250  # LFW images are 250 x 250
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # a file that is no image: an error naming it, never the previous verdict
            _drop_bytes(page, "#drop2", NOT_AN_IMAGE, "notes.txt", "text/plain")
            page.wait_for_selector("#verify-result.error", timeout=60_000)
            assert page.get_attribute("#verify-result", "data-verified") is None
            text = page.inner_text("#verify-result")
            assert "notes.txt" in text and "Same person" not in text
            # and the identify panel does not wait forever on one
            _drop_bytes(page, "#drop3", NOT_AN_IMAGE, "notes.txt", "text/plain")
            page.wait_for_selector("#identify-result li.error", timeout=60_000)
            assert "notes.txt" in page.inner_text("#identify-result")
            assert "Aaron Peirsol" not in page.inner_text("#identify-result")
            # a good photo again: a fresh verdict
            _drop(page, "#drop2", b)
            page.wait_for_selector("#verify-result[data-verified='true']", timeout=60_000)
        finally:
            browser.close()


def test_api_docs_render_without_the_internet(recognizer, tmp_path):
    """/docs and /redoc load their scripts from the service: with every request that leaves
    the loopback refused, both pages still render the API."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    app = create_app(Settings(gallery_root=tmp_path / "galleries"), recognizer=recognizer)
    with BackgroundServer(app) as srv, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        refused: list[str] = []

        def offline(route) -> None:
            if route.request.url.startswith(srv.url):
                route.continue_()
            else:
                refused.append((route.request.resource_type, route.request.url))
                route.abort()

        try:
            page = browser.new_page()
            page.route("**/*", offline)
            page.goto(f"{srv.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=60_000)
            paths = page.eval_on_selector_all(
                ".opblock-summary-path", "els => els.map(e => e.innerText)"
            )
            assert any("/v1/verify" in p for p in paths)
            assert not refused, refused
            page.goto(f"{srv.url}/redoc")
            page.wait_for_function(
                "document.body.innerText.includes('/v1/galleries')", timeout=60_000
            )
            # Redoc's script links its "API docs by Redocly" badge from its CDN: an image
            # only, the page needs nothing else from outside
            assert all(kind == "image" for kind, _ in refused), refused
        finally:
            browser.close()
