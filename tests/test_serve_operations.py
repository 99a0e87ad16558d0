"""The service under real operations: several workers, deletions, odd names, timeouts and
retries, erasure, master and worker deaths, and inputs as clients send them.

Each test is the reproducer of a reported failure (named in its docstring), run against a
real uvicorn on a loopback port, in-process or as ``npcface serve`` itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import lfw_image  # noqa: E402

from npcface import Gallery  # noqa: E402
from npcface.client import Client  # noqa: E402
from npcface.errors import (  # noqa: E402
    GalleryArgumentError,
    GalleryNotFoundError,
    IdentityNotFoundError,
    InvalidArgumentError,
    RequestTimeoutError,
)
from npcface.serve import Settings, create_app  # noqa: E402
from npcface.serve.background import BackgroundServer, ServeProcess  # noqa: E402
from npcface.serve.deadline import Deadline  # noqa: E402

DIM = 128


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def server(recognizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("galleries")
    settings = Settings(gallery_root=root, request_timeout_s=600)
    with BackgroundServer(create_app(settings, recognizer=recognizer)) as srv:
        srv.root = root
        yield srv


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code, body
    return body


# ------------------------------------------------------------------ deleted galleries
def test_a_gallery_deleted_in_one_worker_is_never_served_by_another(tmp_path):
    """Reported: with 2 workers, create g, add old, DELETE g, create g, add new: 25 of 60
    searches over fresh connections still answered from the deleted gallery. Two worker
    managers in one process behave as two processes (they share only the files)."""
    from npcface.serve.galleries import GalleryManager

    a = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=5, writer_idle_s=0.05)
    b = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=5, writer_idle_s=0.05)
    old, new = unit(1, 1), unit(1, 2)
    a.create("g", dim=DIM)
    with a.writer("g") as g:
        g.add("old", old)
    for m in (a, b):  # both now hold a reader of the first gallery g
        with m.reader("g") as g:
            assert g.search(old, k=1)[0][0].identity == "old"
    a.release_idle()
    time.sleep(0.1)
    a.release_idle()
    b.delete("g")  # deleted through the other worker
    with pytest.raises(GalleryNotFoundError), a.reader("g"):
        pass
    b.create("g", dim=DIM)
    with b.writer("g") as g:
        g.add("new", new)
    for m in (a, b):
        with m.reader("g") as g:
            assert g.identities() == ["new"]
            assert g.search(old, k=5)[0][0].identity == "new"
    a.close()
    b.close()


def test_a_worker_writing_without_pause_hands_the_writer_lock_over(tmp_path):
    """Reported by the soak run: a worker whose writes never paused kept the writer lock
    (it is given back after 2 s idle), so the other worker's writes waited until their 503.
    A waiting worker now asks for it and gets it after the holder's current write."""
    from npcface.serve.galleries import GalleryManager

    a = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=3, writer_idle_s=2)
    b = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=3, writer_idle_s=2)
    a.create("g", dim=DIM)
    stop = threading.Event()
    written = []

    def busy_writer() -> None:
        n = 0
        while not stop.is_set():
            with a.writer("g") as g:
                g.add(f"a{n}", unit(1, 1000 + n))
            n += 1
        written.append(n)

    def upkeep() -> None:  # what the app's upkeep task does in each worker
        while not stop.is_set():
            a.release_idle()
            b.release_idle()
            stop.wait(0.5)

    threads = [threading.Thread(target=busy_writer), threading.Thread(target=upkeep)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        for i in range(5):  # each would wait 3 s and fail busy if a never let go
            with b.writer("g") as g:
                g.add(f"b{i}", unit(1, 2000 + i))
        time.sleep(1.0)  # b idle but holding: a asks, b's upkeep hands it over
    finally:
        stop.set()
        for t in threads:
            t.join()
    with b.reader("g") as g:
        names = g.identities()
    assert {f"b{i}" for i in range(5)} <= set(names) and written[0] > 5
    a.close()
    b.close()


def test_two_real_workers_never_answer_from_a_deleted_gallery(tmp_path):
    """The reproducer as reported, on ``npcface serve --workers 2``: 60 searches over fresh
    connections after DELETE and re-creation, each answered from the new gallery only."""
    args = ["--workers", "2", "--preset", "fast", "--gallery-root", str(tmp_path / "root")]
    with ServeProcess(args, log=tmp_path / "serve.log") as srv:
        old, new = unit(1, 3), unit(1, 4)
        c = Client(srv.url)
        c.create_gallery("g").add("old", old)
        pids: set[int] = set()
        for _ in range(20):  # both workers read it once, so both hold a reader
            with Client(srv.url) as fresh:
                assert fresh.gallery("g").search(old, k=1)[0][0].identity == "old"
                pids.add(httpx.get(f"{srv.url}/healthz").json()["pid"])
        c.delete_gallery("g")
        c.create_gallery("g").add("new", new)
        answers = []
        for _ in range(60):
            with Client(srv.url) as fresh:
                answers.append([m.identity for m in fresh.gallery("g").search(old, k=5)[0]])
        assert all(a == ["new"] for a in answers), [a for a in answers if a != ["new"]][:5]


def test_deleting_under_search_load_never_fails_nor_shows_paths(server):
    """Reported: DELETE under search load answered 500 on 2 of 8 (a reader re-opened the
    database between close and rmtree), left WAL/SHM files, and searches on the closed
    handle got a 400 naming the server's file path."""
    url, root = server.url, server.root
    q = unit(1, 5)
    stop = threading.Event()
    bad: list[str] = []
    seen = {"ok": 0, "missing": 0}

    def search() -> None:
        with httpx.Client(timeout=60) as h:
            while not stop.is_set():
                r = h.post(f"{url}/v1/galleries/busy/search", json={"embeddings": q.tolist()})
                if r.status_code == 200:
                    seen["ok"] += 1
                elif r.status_code == 404 and r.json()["error"] == "gallery_not_found":
                    seen["missing"] += 1
                else:
                    bad.append(f"{r.status_code} {r.text}")
                if str(root) in r.text:
                    bad.append(f"path shown: {r.text}")

    c = Client(url)
    c.create_gallery("busy", dim=DIM).add("p", unit(3, 6))
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(search) for _ in range(6)]
        for i in range(8):
            time.sleep(0.05)
            r = httpx.delete(f"{url}/v1/galleries/busy", timeout=60)
            assert r.status_code == 200, r.text
            c.create_gallery("busy", dim=DIM).add(f"p{i}", unit(3, 7 + i))
        stop.set()
        for f in futures:
            f.result()
    assert not bad, bad[:5]
    assert seen["ok"] > 0
    c.delete_gallery("busy")
    assert not [p.name for p in root.iterdir() if p.name.startswith((".deleting-", "busy"))]
    _error(httpx.get(f"{url}/v1/galleries/busy"), 404, "gallery_not_found")
    _error(httpx.get(f"{url}/v1/galleries/never-made"), 404, "gallery_not_found")


# ------------------------------------------------------------------ names are data
def test_identity_names_reach_no_other_resource(server):
    """Reported: remove("..") deleted the whole gallery (the HTTP client normalised the dot
    segment into DELETE /v1/galleries/staff), ".." in g was True for a name never enrolled,
    add(".") gave 405 and add("line\\nbreak") 404, although the library accepts them."""
    c = Client(server.url)
    g = c.create_gallery("names", dim=DIM)
    g.add("alice", unit(1, 20))
    assert ".." not in g and "." not in g
    with pytest.raises(IdentityNotFoundError):
        g.remove("..")
    assert c.galleries().count("names") == 1 and "alice" in g
    odd = [".", "..", "...", "a/b", "../alice", "100%", "%2E%2E", "what?#x", " spaced ", "ünï"]
    for i, name in enumerate(odd):
        ids = g.add(name, unit(1, 30 + i))
        assert name in g and g.templates(name) == ids, name
    assert set(g.identities()) == {"alice", *odd}
    for name in odd:
        assert g.remove(name) == 1 and name not in g
    assert g.identities() == ["alice"]
    # names the library refuses are refused, the same way, with the library's reason
    with pytest.raises(GalleryArgumentError, match="control character"):
        g.add("line\nbreak", unit(1, 50))
    with pytest.raises(InvalidArgumentError):
        g.add("   ", unit(1, 51))
    r = httpx.get(f"{server.url}/v1/galleries/names/identities/nobody")
    _error(r, 404, "identity_not_found")
    # gallery names as data too: refused with 400, never another route
    with pytest.raises(InvalidArgumentError):
        c.delete_gallery("..")
    with pytest.raises(InvalidArgumentError):
        c.create_gallery("a/b")
    assert "names" in c.galleries()


def test_nfd_and_nfc_spellings_are_one_identity_over_http(server):
    """Reported: an NFD folder name (as macOS writes it) and the NFC spelling became two
    identities that print identically."""
    c = Client(server.url)
    g = c.create_gallery("unicode", dim=DIM)
    nfd, nfc = "Zoe\u0308", "Zo\u00eb"
    g.add(nfd, unit(1, 60))
    g.add(nfc, unit(1, 61))
    assert g.identities() == [nfc] and g.template_counts() == {nfc: 2}
    assert nfd in g
    r = httpx.post(
        f"{server.url}/v1/galleries/unicode/identities/{nfd}",
        json={"embeddings": unit(1, 62).tolist()},
    )
    assert r.status_code == 201 and r.json()["identity"] == nfc


# ------------------------------------------------------------------ exactly once
def test_a_timed_out_enrolment_commits_nothing_and_its_retry_enrols_once(
    recognizer, lfw_dir, tmp_path
):
    """Reported: with --timeout 3 an enrolment of 30 photos answered 503 "retry later" but
    had committed its 30 templates; the advised retry left 60."""
    photos = sorted((lfw_dir / "images" / "George_W_Bush").glob("*.jpg"))[:30]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    root = tmp_path / "root"
    quick = Settings(gallery_root=root, request_timeout_s=0.3)
    with BackgroundServer(create_app(quick, recognizer=recognizer)) as srv:
        Client(srv.url).create_gallery("door")
        r = httpx.post(
            f"{srv.url}/v1/galleries/door/identities/gwb",
            files=files,
            headers={"Idempotency-Key": "enrol-gwb-1"},
            timeout=120,
        )
        _error(r, 503, "timeout")
        assert "wrote nothing" in r.json()["message"]
        time.sleep(6)  # the embedding goes on in the background; it must not commit
        assert len(Client(srv.url).gallery("door")) == 0
    patient = Settings(gallery_root=root, request_timeout_s=600)
    with BackgroundServer(create_app(patient, recognizer=recognizer)) as srv:
        answers = []
        for _ in range(2):  # the retry, and the retry of the retry
            r = httpx.post(
                f"{srv.url}/v1/galleries/door/identities/gwb",
                files=files,
                headers={"Idempotency-Key": "enrol-gwb-1"},
                timeout=120,
            )
            assert r.status_code == 201, r.text
            answers.append(r.json())
        assert answers[0]["added"] == 30 and not answers[0]["replayed"]
        assert answers[1]["replayed"] and answers[1]["template_ids"] == answers[0]["template_ids"]
        # without the key, the same photos are recognised by their content
        r = httpx.post(f"{srv.url}/v1/galleries/door/identities/gwb", files=files[:5], timeout=120)
        assert r.json()["added"] == 0 and r.json()["existing"] == 5
        assert r.json()["template_ids"] == answers[0]["template_ids"][:5]
        # one key for another request: refused, nothing written
        r = httpx.post(
            f"{srv.url}/v1/galleries/door/identities/someone-else",
            files=files[:1],
            headers={"Idempotency-Key": "enrol-gwb-1"},
            timeout=120,
        )
        _error(r, 422, "idempotency_key_reused")
        g = Client(srv.url).gallery("door")
        assert g.template_counts() == {"gwb": 30}


def test_a_write_that_started_committing_is_answered_not_timed_out():
    """The one decision at the deadline: a claimed write is answered with its result, an
    expired request never commits."""
    d = Deadline(60)
    d.claim()
    assert d.expire() is False  # committing: the frame waits for the answer
    late = Deadline(0.0)
    with pytest.raises(RequestTimeoutError):
        late.claim()
    answered = Deadline(60)
    assert answered.expire() is True  # 503 sent
    with pytest.raises(RequestTimeoutError):
        answered.claim()  # so the write never happens


def test_the_frame_waits_for_a_claimed_write_past_the_deadline(recognizer, tmp_path):
    """A write claimed just before the deadline and committing past it: the client gets the
    201, not a 503 that would hide the commit."""
    import npcface.serve.galleries as galleries

    settings = Settings(gallery_root=tmp_path / "root", request_timeout_s=1.0)
    app = create_app(settings, recognizer=recognizer)
    real = galleries.claim_write

    def slow_claim() -> None:  # claim, then be slow inside the commit
        real()
        time.sleep(1.5)

    with BackgroundServer(app) as srv:
        Client(srv.url).create_gallery("slow", dim=DIM)
        galleries.claim_write = slow_claim
        try:
            r = httpx.post(
                f"{srv.url}/v1/galleries/slow/identities/x",
                json={"embeddings": unit(1, 70).tolist()},
                timeout=60,
            )
        finally:
            galleries.claim_write = real
        assert r.status_code == 201, r.text
        assert Client(srv.url).gallery("slow").templates("x") == r.json()["template_ids"]


# ------------------------------------------------------------------ thresholds
@pytest.mark.parametrize("threshold", [60, -5, 1.5])
def test_identify_and_search_refuse_thresholds_verify_refuses(server, lfw_dir, threshold):
    """Reported: identify and search took any finite threshold (60: nobody matches; -5:
    everyone does) while verify and the library refuse both."""
    c = Client(server.url)
    if "thr" not in c.galleries():
        c.create_gallery("thr").enroll("aaron", lfw_image(lfw_dir, "Aaron_Peirsol", 1))
    photo = lfw_image(lfw_dir, "Aaron_Peirsol", 2).read_bytes()
    r = httpx.post(
        f"{server.url}/v1/galleries/thr/identify",
        files={"image": ("a.jpg", photo)},
        data={"threshold": str(threshold)},
    )
    body = _error(r, 400, "invalid_argument")  # the library's rule, as verify's
    assert body["input"] == "threshold" and "[-1, 1]" in body["message"]
    r = httpx.post(
        f"{server.url}/v1/galleries/thr/search",
        json={"embeddings": unit(1, 80).tolist(), "threshold": threshold},
    )
    _error(r, 400, "gallery_argument")
    r = httpx.post(
        f"{server.url}/v1/verify",
        files={"image1": ("a.jpg", photo), "image2": ("b.jpg", photo)},
        data={"threshold": str(threshold)},
    )
    _error(r, 400, "invalid_argument")


# ------------------------------------------------------------------ erasure over HTTP
def test_an_identity_deleted_over_http_is_gone_from_the_gallery_files(server):
    """Reported: after an acknowledged DELETE its vectors and metadata stayed in
    gallery.db-wal while the server ran."""
    c = Client(server.url)
    g = c.create_gallery("erase", dim=DIM)
    v = unit(3, 90)
    g.add("keep", unit(2, 91))
    g.add("leaver", v, metadata={"badge": "LEAVER-SECRET-4417"})
    with Client(server.url) as other:  # a search holds a reader in the worker meanwhile
        assert other.gallery("erase").search(v[0], k=1)[0][0].identity == "leaver"
    assert g.remove("leaver") == 3
    folder = server.root / "erase"
    blobs = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    stored = v / np.linalg.norm(v, axis=1, keepdims=True)
    for row in stored:
        assert not [n for n, b in blobs.items() if row.tobytes()[:64] in b]
    assert not [n for n, b in blobs.items() if b"LEAVER-SECRET-4417" in b or b"leaver" in b]
    assert g.search(v[0], k=5)[0][0].identity == "keep"


# ------------------------------------------------------------------ inputs
def test_base64_in_every_common_form(server, recognizer, lfw_dir):
    """Reported: 6 of 8 common base64 forms got 422 "not valid base64" with no reason."""
    raw = lfw_image(lfw_dir, "Aaron_Peirsol", 1).read_bytes()
    std = base64.b64encode(raw).decode()
    forms = {
        "standard": std,
        "data URL": "data:image/jpeg;base64," + std,
        "MIME 76-column lines": base64.encodebytes(raw).decode(),
        "CRLF lines": base64.encodebytes(raw).decode().replace("\n", "\r\n"),
        "trailing newline": std + "\n",
        "URL-safe alphabet": base64.urlsafe_b64encode(raw).decode(),
        "no padding": std.rstrip("="),
        "space after the data: comma": "data:image/jpeg;base64, " + std,
    }
    assert std.endswith("=")  # so "no padding" is a different form
    want = recognizer.detect(raw)[0].box
    for form, text in forms.items():
        r = httpx.post(f"{server.url}/v1/detect", json={"images": [text]})
        assert r.status_code == 200, (form, r.text)
        np.testing.assert_allclose(r.json()["images"][0]["faces"][0]["box"], want, atol=1e-4)
    for text, reason in (
        (std[:100] + "!" + std[100:], "character '!' at position 100"),
        (std[:-3] + "=" * 3, "padding"),
        ("data:image/jpeg," + std, "lacks ';base64'"),
        (std[:1], "no whole number of bytes"),
    ):
        r = httpx.post(f"{server.url}/v1/detect", json={"images": [text]})
        body = _error(r, 422, "image_error")
        assert reason in body["message"] and body["input"] == "images[0]", body


def test_content_types_auth_schemes_and_text_fields_as_clients_send_them(
    recognizer, lfw_dir, tmp_path
):
    """Reported: "Application/JSON" was misread, an image sent as a text field said
    "image1: missing", "Authorization: Token ..." got a generic 401, and a key file saved
    with a UTF-8 byte-order mark stopped the server at start-up."""
    from npcface.serve.auth import new_key

    key, line = new_key("write")
    keyfile = tmp_path / "keys.txt"
    keyfile.write_bytes(b"\xef\xbb\xbf# made on Windows\r\n" + line.encode() + b"\r\n")
    settings = Settings(gallery_root=tmp_path / "root", api_key_file=keyfile)
    photo = lfw_image(lfw_dir, "Aaron_Peirsol", 1).read_bytes()
    b64 = base64.b64encode(photo).decode()
    with BackgroundServer(create_app(settings, recognizer=recognizer)) as srv:
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(
            f"{srv.url}/v1/detect",
            content=f'{{"images": ["{b64}"]}}',
            headers={**auth, "Content-Type": "Application/JSON; Charset=UTF-8"},
        )
        assert r.status_code == 200 and r.json()["images"][0]["faces"], r.text
        r = httpx.post(
            f"{srv.url}/v1/detect", content=photo, headers={**auth, "Content-Type": "IMAGE/JPEG"}
        )
        assert r.status_code == 200, r.text
        r = httpx.post(
            f"{srv.url}/v1/verify",
            data={"image1": b64, "image2": b64},
            files={"x": ("x", b"")},
            headers=auth,
        )
        body = _error(r, 400, "invalid_argument")
        assert "sent as a text field" in body["message"] and body["input"] == "image1"
        r = httpx.get(f"{srv.url}/v1/galleries", headers={"Authorization": f"Token {key}"})
        body = _error(r, 401, "unauthorized")
        assert "'Token'" in body["message"] and "Bearer" in body["message"]
        r = httpx.get(f"{srv.url}/v1/galleries", headers={"Authorization": f"bearer {key}"})
        assert r.status_code == 200


# ------------------------------------------------------------------ process lifecycle
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_end_with_a_killed_master_and_a_restart_binds(tmp_path):
    """Reported: kill -9 of the serving master left the workers serving, and a restart
    failed with "Address already in use"."""
    args = ["--workers", "2", "--preset", "fast", "--gallery-root", str(tmp_path / "root")]
    srv = ServeProcess(args, log=tmp_path / "serve.log")
    with srv:
        workers = set(srv.worker_pids)
        assert len(workers) == 2 and srv.pid not in workers
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived their master"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{srv.url}/healthz", timeout=5)
        srv.start()  # the same port again
        assert httpx.get(f"{srv.url}/healthz").status_code == 200


def test_sigterm_drains_the_requests_in_flight(lfw_dir, tmp_path):
    """SIGTERM to ``npcface serve``: requests already in flight are answered, then it ends."""
    photos = sorted((lfw_dir / "images" / "George_W_Bush").glob("*.jpg"))[:24]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    args = ["--workers", "2", "--preset", "fast", "--gallery-root", str(tmp_path / "root")]
    with ServeProcess(args, log=tmp_path / "serve.log") as srv:
        with ThreadPoolExecutor(2) as pool:
            slow = [
                pool.submit(httpx.post, f"{srv.url}/v1/embed", files=files, timeout=120)
                for _ in range(2)
            ]
            time.sleep(0.3)  # both in flight
            srv.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in slow]
        assert [r.status_code for r in answers] == [200, 200]
        assert all(len(r.json()["images"]) == 24 for r in answers)
        assert srv.proc.wait(timeout=60) == 0


def test_content_hash_of_an_upload_is_its_sha256(server, lfw_dir):
    """Enrolment skips by the SHA-256 of the uploaded bytes (what bulk enrolment records)."""
    photo = lfw_image(lfw_dir, "Abel_Pacheco", 1)
    c = Client(server.url)
    c.create_gallery("hashes").enroll("abel", photo)
    with Gallery.open(server.root / "hashes", readonly=True) as g:
        assert g.content_hashes() == {hashlib.sha256(photo.read_bytes()).hexdigest()}


def test_a_missing_gallery_is_a_typed_404_for_the_client(server):
    c = Client(server.url)
    with pytest.raises(GalleryNotFoundError):
        c.gallery("nowhere").search(unit(1, 99))
