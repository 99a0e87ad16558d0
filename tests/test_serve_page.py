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

DROP_JS = """([b64, name]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
  return dt;
}"""


def _drop(page, selector: str, path: Path) -> None:
    """Drop a file on an element the way a user's drag and drop does (a drop event)."""
    b64 = base64.b64encode(path.read_bytes()).decode()
    dt = page.evaluate_handle(DROP_JS, [b64, path.name])
    page.dispatch_event(selector, "drop", {"dataTransfer": dt})


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
        finally:
            browser.close()
