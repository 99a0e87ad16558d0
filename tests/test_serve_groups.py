"""``/v1/galleries/{name}/groups`` over HTTP (uvicorn on loopback) and the review page in a
real headless Chromium: faces added from photos, grouped; merge, split, move, not this
person and name (enrolled into the gallery) survive a recluster and a page reload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import lfw_image  # noqa: E402

from npcface.client import Client  # noqa: E402
from npcface.serve import Settings, create_app  # noqa: E402
from npcface.serve.background import BackgroundServer  # noqa: E402

CHROMIUM = Path(os.environ.get("NPCFACE_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PEOPLE = ("Colin_Powell", "Tony_Blair")


@pytest.fixture
def server(recognizer, tmp_path):
    app = create_app(Settings(gallery_root=tmp_path / "galleries"), recognizer=recognizer)
    with BackgroundServer(app) as srv:
        Client(srv.url).create_gallery("team")
        yield srv


def add_photos(url: str, lfw_dir: Path, people=PEOPLE, n: int = 3) -> dict:
    files = [
        ("images", (f"{p}_{i}.jpg", lfw_image(lfw_dir, p, i).read_bytes(), "image/jpeg"))
        for p in people
        for i in range(2, n + 2)  # photos with one face each
    ]
    r = httpx.post(f"{url}/v1/galleries/team/groups/faces", files=files, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def groups_by_person(url: str) -> dict[str, set[int]]:
    """person -> the groups holding their faces (from each face's source name)."""
    out: dict[str, set[int]] = {}
    for g in httpx.get(f"{url}/v1/galleries/team/groups").json()["groups"]:
        for f in httpx.get(f"{url}/v1/galleries/team/groups/{g['id']}").json()["faces"]:
            out.setdefault(f["source"].rsplit("_", 1)[0], set()).add(g["id"])
    return out


def test_the_client_speaks_groups(server, lfw_dir) -> None:
    """``Client(url).gallery(name).groups``: the library's result types, typed errors, and
    corrections that stick, as over plain HTTP."""
    from npcface.cluster.store import FaceInfo, GroupInfo
    from npcface.errors import GroupNotFoundError

    gallery = Client(server.url).gallery("team")
    groups = gallery.groups
    photos = [lfw_image(lfw_dir, p, i) for p in PEOPLE for i in (2, 3, 4)]
    faces = groups.add(photos)
    assert len(faces) == 6 and all(isinstance(f, FaceInfo) for f in faces)
    assert [f.id for f in groups.add(photos[:2])] == [f.id for f in faces[:2]]  # nothing new
    listed = groups.groups()
    assert len(listed) == 2 and all(isinstance(g, GroupInfo) for g in listed)
    colin = faces[0].group
    tony = faces[3].group
    assert colin is not None and tony is not None and colin != tony
    assert {f.group for f in faces[:3]} == {colin} and {f.group for f in faces[3:]} == {tony}

    info, members = groups.group(colin)
    assert (
        info.id == colin and info.size == 3 and {f.id for f in members} == {f.id for f in faces[:3]}
    )
    left, new = groups.split(colin, [faces[2].id])
    assert (left.size, new.size) == (2, 1)
    merged = groups.merge(colin, new.id)
    assert merged.size == 3 and merged.confirmed
    assert groups.not_person(faces[1].id, colin).group is None
    assert groups.move(faces[1].id, tony).group == tony
    summary = groups.recluster()
    assert summary["faces"] == 6 and summary["groups"] == 2
    after, members = groups.group(tony)
    assert faces[1].id in {f.id for f in members} and after.size == 4  # the move stuck
    named, templates = groups.name(tony, "Tony Blair")
    assert named.name == "Tony Blair" and len(templates) == 4
    assert gallery.template_counts() == {"Tony Blair": 4}
    with pytest.raises(GroupNotFoundError):
        groups.group(99999)


def test_groups_api(server, lfw_dir) -> None:
    url = server.url
    base = f"{url}/v1/galleries/team/groups"
    added = add_photos(url, lfw_dir)
    assert added["per_image"] == [1] * 6 and added["summary"]["groups"] == 2
    again = add_photos(url, lfw_dir)  # the same photos again: nothing new
    assert [f["id"] for f in again["faces"]] == [f["id"] for f in added["faces"]]
    by = groups_by_person(url)
    (colin,), (tony,) = by["Colin_Powell"], by["Tony_Blair"]
    assert colin != tony
    face = added["faces"][0]["id"]
    thumb = httpx.get(f"{base}/faces/{face}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"

    # a face of Colin moved to Tony's group, another marked not Colin: both stick
    colin_faces = [f["id"] for f in httpx.get(f"{base}/{colin}").json()["faces"]]
    assert httpx.post(f"{base}/faces/{colin_faces[0]}/move", json={"group": tony}).json()[
        "group"
    ] == (tony)
    r = httpx.post(f"{base}/faces/{colin_faces[1]}/not", json={"group": colin})
    assert r.status_code == 200 and r.json()["group"] is None
    assert httpx.post(f"{base}/recluster").status_code == 200
    assert httpx.get(f"{base}/faces/{colin_faces[0]}/thumbnail").status_code == 200
    tony_faces = {f["id"] for f in httpx.get(f"{base}/{tony}").json()["faces"]}
    assert colin_faces[0] in tony_faces
    assert colin_faces[1] not in {f["id"] for f in httpx.get(f"{base}/{colin}").json()["faces"]}

    # name Tony's group: enrolled into the gallery, once
    r = httpx.post(f"{base}/{tony}/name", json={"name": "Tony Blair"})
    assert r.status_code == 200 and len(r.json()["templates"]) == 4
    assert (
        httpx.post(f"{base}/{tony}/name", json={"name": "Tony Blair"}).json()["templates"]
        == (r.json()["templates"])
    )
    ids = httpx.get(f"{url}/v1/galleries/team/identities").json()["identities"]
    assert ids == [{"identity": "Tony Blair", "templates": 4}]

    # errors: typed, with their status
    assert httpx.get(f"{url}/v1/galleries/nowhere/groups").status_code == 404
    r = httpx.get(f"{base}/99999")
    assert r.status_code == 404 and r.json()["error"] == "group_not_found"
    r = httpx.post(f"{base}/{colin}/merge", json={"other": colin})
    assert r.status_code == 400 and r.json()["error"] == "invalid_argument"
    r = httpx.post(f"{base}/{colin}/split", json={"faces": colin_faces[2:]})  # all of it
    assert r.status_code == 400
    r = httpx.post(f"{base}/faces", files=[("images", ("notes.txt", b"not a photo", "text/plain"))])
    assert r.status_code == 422 and r.json()["error"] == "image_error"
    assert "notes.txt" in r.json()["message"]


def test_review_page_merge_split_reload(server, lfw_dir) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    url = server.url
    add_photos(url, lfw_dir)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"{url}/static/groups.html?gallery=team")
            page.wait_for_selector("body[data-loaded='2']", timeout=60_000)
            assert page.locator(".group").count() == 2
            # merge the two groups
            for tick in page.locator(".group .pick").all():
                tick.check()
            page.click("#merge")
            page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
            assert "merged" in page.inner_text("#status")
            assert page.locator(".group img.face").count() == 6
            # reload and recluster: still one group (the merge is kept as must-link)
            page.reload()
            page.wait_for_selector("body[data-loaded='1']", timeout=60_000)
            page.click("#recluster")
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('reclustered: 1')",
                timeout=60_000,
            )
            assert page.locator(".group").count() == 1
            # split Tony's faces off again
            for img in page.locator("#groups img.face[data-source^='Tony_Blair']").all():
                img.click()
            page.click("#split")
            page.wait_for_selector("body[data-loaded='2']", timeout=60_000)
            assert "split 3 faces" in page.inner_text("#status")
            # reload: still so, and both groups confirmed; a recluster changes nothing
            page.reload()
            page.wait_for_selector("body[data-loaded='2']", timeout=60_000)
            assert page.locator(".group .title:has-text('confirmed')").count() == 2
            by = groups_by_person(url)
            assert len(by["Colin_Powell"]) == len(by["Tony_Blair"]) == 1
            assert by["Colin_Powell"] != by["Tony_Blair"]
            page.click("#recluster")
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('reclustered: 2')",
                timeout=60_000,
            )
            assert groups_by_person(url) == by
        finally:
            browser.close()
