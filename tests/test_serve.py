"""The HTTP service on a real uvicorn (loopback, free port), spoken to with the client and
raw HTTP; answers checked against the library called in-process and against brute force."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import lfw_image  # noqa: E402

from npcface import (  # noqa: E402
    FaceRecognizer,
    GalleryError,
    ImageError,
    InvalidArgumentError,
    NoFaceError,
    NpcfaceError,
)
from npcface.client import Client  # noqa: E402
from npcface.errors import GalleryBusyError, NotReadyError, ServiceError  # noqa: E402
from npcface.serve import Settings, create_app  # noqa: E402
from npcface.serve.auth import KeyRing, hash_key  # noqa: E402
from npcface.serve.background import BackgroundServer  # noqa: E402

MAX_IMAGES = 6
MAX_BODY = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def server(recognizer, tmp_path_factory):
    settings = Settings(
        gallery_root=tmp_path_factory.mktemp("galleries"),
        max_images=MAX_IMAGES,
        max_body_bytes=MAX_BODY,
        request_timeout_s=600,  # a loaded 2-core test machine is slow; timeouts have their test
    )
    with BackgroundServer(create_app(settings, recognizer=recognizer)) as srv:
        srv.settings = settings
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url) as c:
        yield c


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "input"}
    assert body["error"] == code, body
    assert "Traceback" not in r.text
    return body


# ------------------------------------------------------------------ operations
def test_health_ready_docs_and_page(server):
    import os

    health = httpx.get(f"{server.url}/healthz")
    assert health.json() == {"status": "ok", "pid": os.getpid()}  # served in this process
    assert health.headers["server-timing"].startswith("app;dur=")
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["model"] == "sface"  # the accurate preset's recogniser
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/verify", "/v1/detect", "/v1/embed", "/v1/galleries/{name}/identify"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    r = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(httpx.get(f"{server.url}/healthz").headers["x-request-id"]) == 32
    # no CORS unless asked for
    r = httpx.get(f"{server.url}/v1/model", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    _error(httpx.get(f"{server.url}/v1/nothing"), 404, "not_found")
    _error(httpx.put(f"{server.url}/v1/verify"), 405, "method_not_allowed")


def test_model_matches_library(client, recognizer):
    m = client.model
    info = recognizer.info
    assert (m["name"], m["embedding_size"], m["input_size"]) == (
        info.name,
        info.embedding_size,
        info.input_size,
    )
    assert m["thresholds"] == pytest.approx(info.thresholds)
    assert client.default_threshold(1e-4) == recognizer.default_threshold(1e-4)


# ------------------------------------------------------------------ faces and verification
def test_detect_embed_verify_match_the_library(client, recognizer, lfw_dir):
    a = lfw_image(lfw_dir, "Aaron_Peirsol", 1)
    b = lfw_image(lfw_dir, "Aaron_Peirsol", 2)
    c = lfw_image(lfw_dir, "Abel_Pacheco", 1)

    faces, lib_faces = client.detect(a), recognizer.detect(a)
    assert len(faces) == len(lib_faces) >= 1
    np.testing.assert_allclose(faces[0].box, lib_faces[0].box, atol=1e-4)
    np.testing.assert_allclose(faces[0].landmarks, lib_faces[0].landmarks, atol=1e-4)

    emb = client.embed(a)
    lib = recognizer.embed(a)
    assert emb.dtype == np.float32 and emb.shape == lib.shape
    np.testing.assert_allclose(emb, lib, atol=1e-5)

    for x, y in ((a, b), (a, c)):
        got, want = client.verify(x, y), recognizer.verify(x, y)
        assert got.verified == want.verified
        assert got.similarity == pytest.approx(want.similarity, abs=1e-5)
        assert got.threshold == want.threshold
        assert got.model == want.model
        np.testing.assert_allclose(got.face2.box, want.face2.box, atol=1e-4)
    # the similarity is the cosine of the two embeddings (independent formula)
    eb = recognizer.embed(b)
    cos = float(lib @ eb / np.linalg.norm(lib) / np.linalg.norm(eb))
    assert client.verify(a, b).similarity == pytest.approx(cos, abs=1e-5)

    # an image and an embedding; a FAR; an explicit threshold
    mixed = client.verify(a, eb, far=1e-4)
    assert mixed.similarity == pytest.approx(cos, abs=1e-5) and mixed.face2 is None
    assert mixed.threshold == recognizer.default_threshold(1e-4)
    assert client.verify(a, b, threshold=0.99).verified is False


def test_verify_reports_the_calibrated_far_and_takes_base64_json(server, recognizer, lfw_dir):
    a = lfw_image(lfw_dir, "Aaron_Peirsol", 1).read_bytes()
    b = lfw_image(lfw_dir, "Aaron_Peirsol", 2).read_bytes()
    body = {
        "image1": base64.b64encode(a).decode(),
        "image2": "data:image/jpeg;base64," + base64.b64encode(b).decode(),
    }
    r = httpx.post(f"{server.url}/v1/verify", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    want = recognizer.verify(a, b)
    assert out["similarity"] == pytest.approx(want.similarity, abs=1e-5)
    assert out["threshold"] == recognizer.default_threshold(1e-3) == want.threshold
    assert out["far"] == 1e-3
    r = httpx.post(f"{server.url}/v1/verify", json={**body, "far": 1e-5}, timeout=60)
    assert r.json()["far"] == 1e-5
    assert r.json()["threshold"] == recognizer.default_threshold(1e-5)
    r = httpx.post(f"{server.url}/v1/verify", json={**body, "threshold": 0.5}, timeout=60)
    assert r.json()["far"] is None and r.json()["threshold"] == 0.5
    _error(
        httpx.post(f"{server.url}/v1/verify", json={**body, "far": 0.3}, timeout=60),
        400,
        "invalid_argument",
    )
    _error(
        httpx.post(f"{server.url}/v1/verify", json={"image1": body["image1"]}, timeout=60),
        400,
        "invalid_argument",
    )


def test_embed_many_is_one_batch_with_failures_in_place(client, server, recognizer, lfw_dir):
    paths = [lfw_image(lfw_dir, n, 1) for n in ("Aaron_Peirsol", "Abel_Pacheco", "AJ_Cook")]
    images = [paths[0], b"not an image", paths[1], _png(np.full((80, 80, 3), 128, np.uint8))]
    images.append(paths[2])
    got = client.embed_many(images)
    lib = recognizer.embed_many(images)
    assert [r.ok for r in got] == [r.ok for r in lib] == [True, False, True, False, True]
    assert [type(r.error) for r in got] == [type(r.error) for r in lib]
    assert isinstance(got[1].error, ImageError) and isinstance(got[3].error, NoFaceError)
    for g, w in zip(got, lib, strict=True):
        if w.ok:
            np.testing.assert_allclose(g.embedding, w.embedding, atol=1e-5)
    # every face of a group photo, each with an embedding
    embs, faces = client.represent_all(paths[0])
    lib_embs, lib_faces = recognizer.represent_all(paths[0])
    assert len(faces) == len(lib_faces)
    np.testing.assert_allclose(embs, lib_embs, atol=1e-5)


# ------------------------------------------------------------------ bad inputs
def _bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, format="PNG")  # 144 Mpx in ~140 kB
    return buf.getvalue()


def _truncated(lfw: Path) -> bytes:
    data = lfw_image(lfw, "Aaron_Peirsol", 1).read_bytes()
    return data[: len(data) // 3]


@pytest.mark.parametrize(
    "case",
    ["empty", "truncated", "not_an_image", "decompression_bomb", "no_face"],
)
def test_bad_images_get_the_library_error_as_json(case, server, client, recognizer, lfw_dir):
    data = {
        "empty": lambda: b"",
        "truncated": lambda: _truncated(lfw_dir),
        "not_an_image": lambda: b"%PDF-1.4 definitely not a photo",
        "decompression_bomb": _bomb,
        "no_face": lambda: _png(np.full((120, 120, 3), 200, np.uint8)),
    }[case]()
    with pytest.raises(NpcfaceError) as lib_exc:
        recognizer.represent(data)
    code = "no_face" if case == "no_face" else "image_error"
    files = {"images": ("photo.jpg", data, "image/jpeg")}
    r = httpx.post(f"{server.url}/v1/detect", files=files, timeout=60)
    if case == "no_face":  # detection finds zero faces, which is no error
        assert r.status_code == 200 and r.json()["images"][0]["faces"] == []
    else:
        body = _error(r, 422, code)
        assert body["input"] == "images[0]" and "photo.jpg" in body["message"]
    # one image as the whole body, named by Content-Disposition
    headers = {
        "content-type": "image/jpeg",
        "content-disposition": "inline; filename*=UTF-8''ph%C3%B6to.jpg",
    }
    r = httpx.post(f"{server.url}/v1/detect", content=data, headers=headers, timeout=60)
    if case == "no_face":
        assert r.status_code == 200 and r.json()["images"][0]["faces"] == []
        assert client.detect(data) == []
    else:
        body = _error(r, 422, code)
        assert body["input"] == "images[0]" and "ph\u00f6to.jpg" in body["message"]
        with pytest.raises(NpcfaceError) as exc:
            client.detect(data)  # sends the body this way
        assert type(exc.value) is type(lib_exc.value)
    files = {"image1": ("a.jpg", data), "image2": ("b.jpg", data)}
    body = _error(httpx.post(f"{server.url}/v1/verify", files=files, timeout=60), 422, code)
    assert body["input"] == "image1[0]" and body["message"].startswith("a.jpg")
    # the client raises what the library raises
    with pytest.raises(NpcfaceError) as exc:
        client.represent(data)
    assert type(exc.value) is type(lib_exc.value)
    assert exc.value.status == 422


def test_one_image_as_the_whole_body(server, client, recognizer, lfw_dir):
    a, a2 = lfw_image(lfw_dir, "Aaron_Peirsol", 1), lfw_image(lfw_dir, "Aaron_Peirsol", 2)
    data = a.read_bytes()
    jpeg = {"content-type": "image/jpeg"}
    raw = httpx.post(f"{server.url}/v1/detect", content=data, headers=jpeg)
    multipart = httpx.post(f"{server.url}/v1/detect", files=[("images", ("a.jpg", data))])
    assert raw.status_code == 200 and raw.json() == multipart.json()

    g = client.create_gallery("rawbody")
    g.add("aaron", recognizer.embed(a2))
    g.add("abel", recognizer.embed(lfw_image(lfw_dir, "Abel_Pacheco", 1)))
    r = httpx.post(
        f"{server.url}/v1/galleries/rawbody/identify",
        params={"k": 1},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 200
    (face,) = r.json()["faces"]
    assert [m["identity"] for m in face["matches"]] == ["aaron"]
    cos = float(recognizer.embed(a) @ recognizer.embed(a2))  # both unit vectors
    assert face["matches"][0]["similarity"] == pytest.approx(cos, abs=1e-5)
    (match,) = g.identify(a, k=1)  # the client sends one image this way
    assert match.identity == "aaron" and match.similarity == pytest.approx(cos, abs=1e-5)

    # the image field cannot come in the query string too; other types are refused
    r = httpx.post(
        f"{server.url}/v1/galleries/rawbody/identify",
        params={"image": "x"},
        content=data,
        headers=jpeg,
    )
    assert _error(r, 400, "invalid_argument")["input"] == "image"
    r = httpx.post(f"{server.url}/v1/detect", content=data, headers={"content-type": "text/plain"})
    assert "image/*" in _error(r, 400, "invalid_argument")["message"]
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body = spec["paths"]["/v1/galleries/{name}/identify"]["post"]["requestBody"]
    assert {"image/*", "multipart/form-data", "application/json"} <= set(body["content"])
    client.delete_gallery("rawbody")


def test_request_limits(server, client):
    tiny = _png(np.zeros((8, 8, 3), np.uint8))
    files = [("images", (f"{i}.png", tiny)) for i in range(MAX_IMAGES + 1)]
    body = _error(httpx.post(f"{server.url}/v1/embed", files=files), 400, "too_many_images")
    assert str(MAX_IMAGES) in body["message"]
    with pytest.raises(InvalidArgumentError):
        client.embed_many([tiny] * (MAX_IMAGES + 1))
    big = b"\0" * (MAX_BODY + 1)
    _error(httpx.post(f"{server.url}/v1/detect", files={"images": big}), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536

    r = httpx.post(
        f"{server.url}/v1/detect", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(r, 413, "payload_too_large")
    _error(httpx.post(f"{server.url}/v1/detect", json={"images": ["!!!"]}), 422, "image_error")
    _error(
        httpx.post(f"{server.url}/v1/detect", content=b"x", headers={"content-type": "text/plain"}),
        400,
        "invalid_argument",
    )
    _error(httpx.post(f"{server.url}/v1/detect", json={"images": []}), 400, "invalid_argument")


def test_timeout_and_internal_errors_say_nothing_of_the_server(recognizer, tmp_path):
    import time

    class Broken(FaceRecognizer):  # a bug and a stall in the server's code path
        def detect(self, image):
            if isinstance(image, bytes):  # uploads; the warm-up at start passes an array
                raise RuntimeError("secret /etc/passwd detail")
            return super().detect(image)

        def represent(self, image, policy=None):
            time.sleep(4)
            return super().represent(image, policy)

    broken = Broken()
    broken._detector, broken._embedder = recognizer.detector, recognizer.embedder
    app = create_app(Settings(gallery_root=tmp_path, request_timeout_s=1.5), recognizer=broken)
    with BackgroundServer(app) as srv:
        tiny = _png(np.zeros((8, 8, 3), np.uint8))
        r = httpx.post(f"{srv.url}/v1/detect", files={"images": tiny}, timeout=60)
        body = _error(r, 500, "internal")
        assert "secret" not in r.text and "RuntimeError" not in r.text
        assert body["message"] == "internal server error"
        t0 = time.perf_counter()
        r = httpx.post(f"{srv.url}/v1/verify", files={"image1": tiny, "image2": tiny}, timeout=60)
        _error(r, 503, "timeout")
        assert time.perf_counter() - t0 < 4  # answered at the timeout, not when the work ended
        assert httpx.get(f"{srv.url}/healthz", timeout=60).status_code == 200  # still serving


# ------------------------------------------------------------------ galleries
def test_gallery_lifecycle_against_brute_force(client, server, recognizer, lfw_dir):
    people = {
        "Aaron_Peirsol": [1, 2],
        "Abel_Pacheco": [1, 2],
        "Akhmed_Zakayev": [1, 2],
        "Amber_Tamblyn": [1],
    }
    g = client.create_gallery("staff")
    with pytest.raises(GalleryError) as exc:
        client.create_gallery("staff")
    assert exc.value.status == 409 and exc.value.code == "gallery_exists"
    assert "staff" in client.galleries()
    enrolled: dict[str, list[int]] = {}
    for name, ns in people.items():
        enrolled[name] = g.enroll(name, [lfw_image(lfw_dir, name, n) for n in ns], {"who": name})
    assert [len(v) for v in enrolled.values()] == [len(v) for v in people.values()]
    info = g.info()
    assert (info.identities, info.templates, info.model) == (4, 7, "sface")
    assert len(g) == 4 and "Abel_Pacheco" in g and "nobody" not in g
    assert g.templates("Abel_Pacheco") == enrolled["Abel_Pacheco"]
    assert g.metadata("Abel_Pacheco") == {"who": "Abel_Pacheco"}
    assert g.metadata("nobody") is None
    r = httpx.get(f"{server.url}/v1/galleries/staff/identities/Amber_Tamblyn")
    assert r.status_code == 200 and r.json()["metadata"] == {"who": "Amber_Tamblyn"}
    assert g.template_counts(page=3) == {n: len(v) for n, v in people.items()}  # 2 pages
    r = httpx.get(f"{server.url}/v1/galleries/staff/identities", params={"offset": 1, "limit": 2})
    assert r.json()["total"] == 4
    assert [i["identity"] for i in r.json()["identities"]] == list(people)[1:3]

    # identify: the library's embeddings, brute-force cosine over the enrolled templates
    templates = {
        name: np.stack([recognizer.embed(lfw_image(lfw_dir, name, n)) for n in ns])
        for name, ns in people.items()
    }
    probe = lfw_image(lfw_dir, "Aaron_Peirsol", 3)
    q = recognizer.embed(probe)
    best = {name: float((t @ q).max()) for name, t in templates.items()}
    ranked = sorted(best, key=best.get, reverse=True)
    matches = g.identify(probe, k=3, threshold=-1)  # every similarity passes: the top 3
    assert [m.identity for m in matches] == ranked[:3]
    for m in matches:
        assert m.similarity == pytest.approx(best[m.identity], abs=1e-4)
    assert matches[0].metadata == {"who": "Aaron_Peirsol"}
    # by default, the library's contract: the calibrated default threshold applies
    default = recognizer.default_threshold()
    assert [m.identity for m in g.identify(probe, k=3)] == [
        n for n in ranked[:3] if best[n] >= default
    ]
    # open set: a stranger gets nobody at the calibrated FAR 1e-4 threshold
    stranger = lfw_image(lfw_dir, "AJ_Cook", 1)
    qs = recognizer.embed(stranger)
    thr = recognizer.default_threshold(1e-4)
    expect = sorted(
        (n for n, t in templates.items() if float((t @ qs).max()) >= thr),
        key=lambda n: -float((templates[n] @ qs).max()),
    )
    assert [m.identity for m in g.identify(stranger, k=4, far=1e-4)] == expect
    per_face = g.identify_faces(probe, k=1, threshold=thr)
    assert len(per_face) == len(recognizer.detect(probe))
    assert per_face[0][1][0].identity == "Aaron_Peirsol"

    # search by a batch of embeddings = brute force
    rows = g.search(np.stack([q, qs]), k=2)
    for row, query in zip(rows, (q, qs), strict=True):
        sims = {n: float((t @ query).max()) for n, t in templates.items()}
        assert [m.identity for m in row] == sorted(sims, key=sims.get, reverse=True)[:2]
    assert g.identify(q, k=1)[0].identity == "Aaron_Peirsol"  # an embedding as the query

    # embeddings enrolment, then deletes
    extra = np.random.default_rng(1).standard_normal((2, q.size)).astype(np.float32)
    ids = g.add("lab/synthetic 1", extra, metadata={"kind": "test"})
    assert len(ids) == 2 and g.search(extra[0], k=1)[0][0].identity == "lab/synthetic 1"
    assert "lab/synthetic 1" in g and g.templates("lab/synthetic 1") == ids  # '/' in a name
    with pytest.raises(GalleryError):
        g.add("bad", np.ones(q.size + 1, np.float32))  # wrong dimension: the library's class
    assert g.remove("lab/synthetic 1") == 2
    with pytest.raises(GalleryError) as exc:
        g.remove("lab/synthetic 1")
    assert exc.value.status == 404 and exc.value.code == "identity_not_found"
    with pytest.raises(NoFaceError):
        g.enroll("blank", [_png(np.full((90, 90, 3), 30, np.uint8))])
    assert "blank" not in g

    # the gallery on disk, opened by the library, holds what the service acknowledged
    from npcface import Gallery

    with Gallery.open(server.settings.gallery_root / "staff", readonly=True) as lib_g:
        assert lib_g.template_counts() == {n: len(v) for n, v in people.items()}
    client.delete_gallery("staff")
    assert "staff" not in client.galleries()
    with pytest.raises(GalleryError) as exc:
        client.gallery("staff").info()
    assert exc.value.status == 404 and exc.value.code == "gallery_not_found"
    _error(
        httpx.post(f"{server.url}/v1/galleries", json={"name": "../etc"}), 400, "invalid_argument"
    )


# ------------------------------------------------------------------ concurrency
def test_32_concurrent_verifies_give_the_library_answers(server, recognizer, lfw_dir):
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    distinct = []
    for line in lines[:4] + lines[300:304]:  # 4 same-person and 4 different-person pairs
        p = line.split()
        if len(p) == 3:
            pair = (lfw_image(lfw_dir, p[0], int(p[1])), lfw_image(lfw_dir, p[0], int(p[2])))
        else:
            pair = (lfw_image(lfw_dir, p[0], int(p[1])), lfw_image(lfw_dir, p[2], int(p[3])))
        distinct.append(pair)
    answers = [recognizer.verify(a, b) for a, b in distinct]
    pairs, want = distinct * 4, answers * 4  # 32 requests at once, each pair 4 times
    barrier = threading.Barrier(32)

    def call(pair):
        with Client(server.url, timeout=600) as c:
            barrier.wait()
            return c.verify(*pair)

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(call, pairs))
    assert [g.verified for g in got] == [w.verified for w in want]
    assert sum(w.verified for w in answers) >= 3  # the pairs are what they say
    np.testing.assert_allclose([g.similarity for g in got], [w.similarity for w in want], atol=1e-5)


# ------------------------------------------------------------------ auth
def test_api_keys(recognizer, tmp_path):
    write_key, read_key = "w-" + "x" * 40, "r-" + "y" * 40
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(
        "# role sha256 label\n"
        f"write {hashlib.sha256(write_key.encode()).hexdigest()} admin\n"
        f"read {hashlib.sha256(read_key.encode()).hexdigest()}\n"
    )
    app = create_app(Settings(gallery_root=tmp_path / "g", api_key_file=keyfile), recognizer)
    with BackgroundServer(app) as srv:
        u = srv.url
        body = _error(httpx.get(f"{u}/v1/galleries"), 401, "unauthorized")
        assert "required" in body["message"]
        _error(httpx.get(f"{u}/v1/galleries", headers={"X-API-Key": "nope"}), 401, "unauthorized")
        bearer = {"Authorization": f"Bearer {read_key}"}
        assert httpx.get(f"{u}/v1/galleries", headers=bearer).json() == {"galleries": []}
        assert httpx.get(f"{u}/healthz").status_code == 200  # operations stay open
        assert httpx.get(f"{u}/readyz").status_code == 200
        r = httpx.post(f"{u}/v1/galleries", json={"name": "g1"}, headers=bearer)
        _error(r, 403, "forbidden")
        writer = Client(u, api_key=write_key)
        g = writer.create_gallery("g1")
        reader = Client(u, api_key=read_key)
        with pytest.raises(NpcfaceError) as exc:
            reader.gallery("g1").add("x", np.ones(128, np.float32))
        assert exc.value.status == 403
        with pytest.raises(NpcfaceError) as exc:
            reader.delete_gallery("g1")
        assert exc.value.status == 403 and exc.value.code == "forbidden"
        g.add("x", np.ones(128, np.float32))
        assert reader.gallery("g1").identities() == ["x"]  # reading is allowed
        with pytest.raises(NpcfaceError) as exc:
            Client(u).galleries()
        assert exc.value.status == 401 and isinstance(exc.value, ServiceError)
        writer.delete_gallery("g1")


def test_key_file_and_new_key(tmp_path, capsys):
    from npcface.cli import main

    assert main(["serve", "--new-key", "read"]) == 0
    out = capsys.readouterr().out.split("\n")
    key = out[0].split()[-1]
    line = out[1].split(None, 1)[1].split("   ")[0]
    assert line == f"read {hashlib.sha256(key.encode()).hexdigest()}"
    (tmp_path / "k").write_text(line + "\n")
    ring = KeyRing.load(tmp_path / "k")
    assert ring.role_of(key) == "read" and ring.role_of(key + "x") is None
    assert key not in (tmp_path / "k").read_text() and hash_key(key) in line
    (tmp_path / "bad").write_text("admin 1234\n")
    with pytest.raises(NpcfaceError):
        KeyRing.load(tmp_path / "bad")


def test_cli_defaults_to_loopback_and_the_default_models(tmp_path):
    from npcface.cli import build_parser
    from npcface.serve.cli import settings_from_args

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 8000, 1)
    s = settings_from_args(args)
    # the library's defaults: the service's pipeline is the inference default
    from npcface import FaceRecognizer
    from npcface.config import RecognizerConfig

    assert s.pipeline == RecognizerConfig()
    assert s.build_recognizer().config == FaceRecognizer().config
    assert (s.api_key_file, s.cors_origins) == (None, ())
    assert (s.max_images, s.request_timeout_s, s.max_streams) == (32, 60.0, 4)
    args = build_parser().parse_args(
        ["serve", "--max-streams", "2", "--gallery-root", str(tmp_path)]
    )
    assert settings_from_args(args).max_streams == 2
    app = create_app(settings_from_args(args))
    assert app.state.streams.limit == 2  # the stream monitors' limit is the setting
    # the same pipeline options as every command, read by the same parser
    args = build_parser().parse_args(["serve", "--preset", "fast", "--max-pixels", "1000000"])
    assert settings_from_args(args).pipeline == RecognizerConfig(
        preset="fast", max_pixels=1_000_000
    )


# ------------------------------------------------------------------ durability
def test_sigkill_during_enrolment_loses_no_acknowledged_identity(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from npcface import Gallery

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "galleries"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "npcface.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--gallery-root", str(root)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        client = Client(url, timeout=30)
        deadline = time.monotonic() + 120
        while not client.ready():
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        client.create_gallery("door")
        acked: dict[str, tuple[list[int], np.ndarray]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def enrol(worker: int) -> None:
            rng = np.random.default_rng(worker)
            with Client(url, timeout=30) as c:
                g = c.gallery("door")
                for n in range(10_000):
                    if stop.is_set():
                        return
                    name = f"w{worker}-{n}"
                    vecs = rng.standard_normal((1 + n % 3, 128)).astype(np.float32)
                    try:
                        ids = g.add(name, vecs, metadata={"n": n})
                    except NpcfaceError:
                        return  # the server is gone
                    with lock:
                        acked[name] = (ids, vecs)

        threads = [threading.Thread(target=enrol, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 60:
            assert proc.poll() is None
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    with Gallery.open(root / "door") as g:  # the writer lock died with the process
        counts = g.template_counts()
        for name, (ids, vecs) in acked.items():
            assert sorted(g.templates(name)) == sorted(ids), name
            best = g.search(vecs[0], k=1)[0][0]
            assert best.identity == name and best.metadata == {"n": int(name.split("-")[1])}
        assert set(acked) <= set(counts)
        assert g.check().ok


# ------------------------------------------------------------------ several workers
def test_workers_share_a_gallery_one_writer_at_a_time(tmp_path):
    """Two workers' gallery managers (as in two processes: flock holds between open files):
    the writer's commits reach the other's reads, and the writer lock passes over when idle."""
    from npcface.serve.galleries import GalleryManager

    a = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=0.3, writer_idle_s=0.2)
    b = GalleryManager(tmp_path, keep_writer=False, writer_wait_s=3.0, writer_idle_s=0.2)
    a.create("g", dim=4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with a.writer("g") as g:
        g.add("alice", x[:2])
    with b.reader("g") as g:  # b follows a's committed writes
        assert g.identities() == ["alice"]
        assert g.search(x[0], k=1)[0][0].identity == "alice"
    with pytest.raises(GalleryBusyError) as exc, a.writer("g"), b.writer("g"):  # b must wait
        pass
    assert exc.value.code == "gallery_busy"
    done = threading.Event()

    def idle_upkeep():  # ... until a's upkeep gives the idle lock back
        while not done.is_set():
            a.release_idle()
            done.wait(0.05)

    t = threading.Thread(target=idle_upkeep)
    t.start()
    try:
        with b.writer("g") as g:
            g.add("bob", x[2])
    finally:
        done.set()
        t.join()
    with a.reader("g") as g:
        assert g.identities() == ["alice", "bob"]
    a.close()
    b.close()


@pytest.mark.slow
def test_serve_with_two_workers_shares_galleries(tmp_path):
    """``npcface serve --workers 2`` for real: concurrent writes through both worker
    processes all land, and every acknowledged identity is found at once through fresh
    connections (which the kernel hands to either worker)."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "npcface.cli", "serve", "--port", str(port), "--workers", "2"]
    cmd += ["--gallery-root", str(tmp_path / "galleries"), "--preset", "fast"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        pids: set[int] = set()
        while len(pids) < 2:  # both workers up and answering
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, f"one worker only: {pids}"
            try:
                with httpx.Client() as h:  # a fresh connection each time
                    if h.get(f"{url}/readyz").status_code == 200:
                        pids.add(h.get(f"{url}/healthz").json()["pid"])
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert proc.pid not in pids
        Client(url).create_gallery("shared", dim=128)
        acked: dict[str, np.ndarray] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            rng = np.random.default_rng(w)
            try:
                for n in range(12):
                    with Client(url, timeout=60) as c:  # fresh connection per write
                        v = rng.standard_normal(128).astype(np.float32)
                        c.gallery("shared").add(f"w{w}-{n}", v)
                        with lock:
                            acked[f"w{w}-{n}"] = v
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(acked) == 48
        for name, v in acked.items():  # each search may land on either worker
            with Client(url, timeout=60) as c:
                best = c.gallery("shared").search(v[None], k=1)[0][0]
            assert best.identity == name and best.similarity > 0.999
        with Client(url) as c:
            assert len(c.gallery("shared")) == 48
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_metrics_and_request_ids_in_logs(server, client, lfw_dir, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict:
        text = httpx.get(f"{server.url}/metrics").text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    g = client.create_gallery("metered")
    g.add("a", np.ones((2, 128), np.float32) + np.eye(2, 128, dtype=np.float32))
    g.add("b", np.arange(128, dtype=np.float32) + 1)
    before = scrape()
    photo = lfw_image(lfw_dir, "Aaron_Peirsol", 1)
    with caplog.at_level("INFO", logger="npcface.serve.access"):
        r = httpx.post(
            f"{server.url}/v1/detect",
            files=[("images", photo.read_bytes()), ("images", photo.read_bytes())],
            headers={"X-Request-ID": "trace-42"},
        )
        # the access line is written once the answer has gone out: it may follow it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "trace-42" in rec.getMessage() for rec in caplog.records
        ):
            time.sleep(0.01)
    n_faces = sum(len(i["faces"]) for i in r.json()["images"])
    after = scrape()
    route = (("method", "POST"), ("route", "/v1/detect"), ("status", "200"))
    assert (
        after[("npcface_requests_total", route)]
        == before.get(("npcface_requests_total", route), 0) + 1
    )
    hist = ("npcface_request_seconds_count", (("method", "POST"), ("route", "/v1/detect")))
    assert after[hist] == before.get(hist, 0) + 1
    faces = ("npcface_faces_detected_total", ())
    assert after[faces] - before.get(faces, 0) == n_faces >= 2
    assert after[("npcface_images_total", ())] - before.get(("npcface_images_total", ()), 0) == 2
    assert after[("npcface_gallery_identities", (("gallery", "metered"),))] == 2
    assert after[("npcface_gallery_templates", (("gallery", "metered"),))] == 3
    lines = [rec.getMessage() for rec in caplog.records if "trace-42" in rec.getMessage()]
    assert len(lines) == 1 and "POST /v1/detect 200" in lines[0]
    client.delete_gallery("metered")


def test_every_error_class_survives_the_wire():
    """Each NpcfaceError class declares its code and status; the service answers with them
    and the client turns the body back into that very class, message and input kept."""
    import inspect

    from npcface import errors
    from npcface.wire import ERRORS, error_body, exception_from

    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.NpcfaceError)
    ]
    assert len(classes) >= 25 and all("code" in vars(c) for c in classes)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "one class per code"
    assert set(ERRORS) == set(codes)
    for cls in classes:
        exc = cls("the message", input="images[1]")
        status, body = error_body(exc)
        assert status == cls.status, cls
        assert body == {"error": cls.code, "message": "the message", "input": "images[1]"}
        # 5xx only for the service's own conditions and a gallery server that is away
        unavailable = (errors.ServiceError, errors.GalleryUnavailableError)
        assert 400 <= status < 500 or issubclass(cls, unavailable), cls
        back = exception_from(body, status)
        assert type(back) is cls and str(back) == "the message" and back.input == "images[1]"
    # anything else is "internal", and says nothing of itself
    status, body = error_body(KeyError("/srv/secret/path"))
    assert status == 500 and body["error"] == "internal" and "secret" not in body["message"]


# ------------------------------------------------------------------ dropped connections
class DropFirstRequest:
    """A loopback TCP relay to ``target`` that closes its first connection after reading
    the request, without answering (as a server closing a kept-alive connection just as a
    request arrives), and relays every later connection whole."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.dropped == 0:
                self.dropped += 1
                conn.recv(65536)
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.sock.close()


def test_client_sends_a_read_only_request_again_after_a_dropped_connection(server):
    relay = DropFirstRequest(server.port)
    try:
        with Client(relay.url) as c:
            assert c.model["embedding_size"] == 128  # GET: dropped once, sent again
        assert relay.dropped == 1
    finally:
        relay.close()
    relay = DropFirstRequest(server.port)
    try:
        with Client(relay.url) as c, pytest.raises(NotReadyError) as exc:
            c.create_gallery("dropped", dim=128)  # has side effects: not sent twice
        assert exc.value.code == "not_ready"
        with Client(server.url) as direct:
            assert "dropped" not in direct.galleries()
    finally:
        relay.close()


# ------------------------------------------------------------------ every route's schema
def _conforms(model: type, value: object, where: str) -> None:
    """``value`` is an instance of the pydantic ``model``: it validates, and no object at
    any depth has a key the model does not declare (a field added in a handler but not in
    ``schemas.py`` fails here)."""
    import typing

    from pydantic import BaseModel

    model.model_validate(value)

    def walk(tp: object, v: object, path: str) -> None:
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            assert isinstance(v, dict), f"{path}: not an object"
            extra = set(v) - set(tp.model_fields)
            assert not extra, f"{path}: keys {sorted(extra)} are not in {tp.__name__}"
            for name, field in tp.model_fields.items():
                if name in v:
                    walk(field.annotation, v[name], f"{path}.{name}")
        elif origin in (list, tuple) and isinstance(v, list):
            (inner,) = typing.get_args(tp)[:1]
            for i, item in enumerate(v):
                walk(inner, item, f"{path}[{i}]")
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            for arg in typing.get_args(tp):
                if arg is not type(None) and v is not None:
                    walk(arg, v, path)

    walk(model, value, where)


def test_every_route_answers_its_schema(server, recognizer, lfw_dir, tmp_path):
    """Every route with a declared response model is called, and its JSON conforms to the
    model, as every error body conforms to ErrorOut; no route is left out. A stream monitor
    watches a composed clip (its recent events conform too)."""
    from npcface.serve import schemas

    url = server.url
    a = lfw_image(lfw_dir, "Aaron_Peirsol", 1).read_bytes()
    b = lfw_image(lfw_dir, "Aaron_Peirsol", 2).read_bytes()
    emb = recognizer.embed(a).astype(float).tolist()
    calls = [
        ("GET", "/v1/model", {}),
        ("POST", "/v1/detect", {"files": [("images", a)]}),
        ("POST", "/v1/embed", {"files": [("images", a), ("images", b"not an image")]}),
        ("POST", "/v1/verify", {"files": {"image1": a, "image2": b}}),
        ("POST", "/v1/galleries", {"json": {"name": "schema"}}),
        ("GET", "/v1/galleries", {}),
        ("GET", "/v1/galleries/{name}", {}),
        ("POST", "/v1/galleries/{name}/identities/{identity}", {"files": [("images", a)]}),
        ("GET", "/v1/galleries/{name}/identities", {}),
        ("GET", "/v1/galleries/{name}/identities/{identity}", {}),
        ("POST", "/v1/galleries/{name}/identify", {"files": {"image": b}, "data": {"k": "2"}}),
        ("POST", "/v1/galleries/{name}/search", {"json": {"embeddings": [emb], "k": 2}}),
        ("DELETE", "/v1/galleries/{name}/identities/{identity}", {}),
        ("DELETE", "/v1/galleries/{name}", {}),
    ]
    declared: dict[tuple[str, str], dict[int, dict]] = {}  # from the published OpenAPI
    for path, ops in server.app.openapi()["paths"].items():
        for method, op in ops.items():
            for status, answer in op.get("responses", {}).items():
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {})
                name = ref.get("$ref", "").rsplit("/", 1)[-1]
                if status.startswith("2") and hasattr(schemas, name):
                    declared.setdefault((method.upper(), path), {})[int(status)] = {
                        "model": getattr(schemas, name)
                    }
    seen = set()
    for method, path, kwargs in calls:
        r = httpx.request(
            method,
            url + path.format(name="schema", identity="Aaron Peirsol"),
            timeout=120,
            **kwargs,
        )
        assert r.status_code in declared[(method, path)], (method, path, r.text)
        model = declared[(method, path)][r.status_code]["model"]
        _conforms(model, r.json(), f"{method} {path}")
        seen.add((method, path))
    # stream monitors: a clip watched until its first events, then stopped
    source = str(tmp_path / "absent.mp4")  # without the video extra: the monitor retries
    if importlib.util.find_spec("av") and importlib.util.find_spec("supervision"):
        from video_clips import make_clip

        source = str(make_clip(recognizer, tmp_path).path)
    monitor = ""

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = httpx.request(method, url + path.format(monitor_id=monitor), timeout=60, **kwargs)
        assert r.status_code in declared[(method, path)], (method, path, r.text)
        _conforms(declared[(method, path)][r.status_code]["model"], r.json(), path)
        seen.add((method, path))
        return r

    monitor = call("POST", "/v1/streams", json={"source": source}).json()["id"]
    call("GET", "/v1/streams")
    call("GET", "/v1/streams/{monitor_id}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = call("GET", "/v1/streams/{monitor_id}/recent").json()["events"]
        if source.endswith("absent.mp4") or {"started", "ended"} <= {e["event"] for e in events}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no started and ended events: {events}")
    assert call("DELETE", "/v1/streams/{monitor_id}").json()["state"] == "stopped"
    # groups of a gallery's unlabelled faces: add, list, inspect, correct, name, recluster
    group = face = 0

    def gcall(method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = "/v1/galleries/{name}/groups" + path
        r = httpx.request(
            method, url + where.format(name="grouped", group=group, face=face), timeout=120,
            **kwargs,
        )  # fmt: skip
        assert r.status_code in declared[(method, where)], (method, where, r.text)
        _conforms(declared[(method, where)][r.status_code]["model"], r.json(), where)
        seen.add((method, where))
        return r

    assert httpx.post(f"{url}/v1/galleries", json={"name": "grouped"}).status_code == 201
    photos = [("Colin_Powell", i) for i in (1, 2, 3)] + [("Tony_Blair", i) for i in (1, 2, 3)]
    files = [("images", lfw_image(lfw_dir, p, i).read_bytes()) for p, i in photos]
    gcall("POST", "/faces", files=files)
    groups = gcall("GET", "").json()["groups"]
    assert groups, "six photos of two people made no group"
    group = groups[0]["id"]
    members = [f["id"] for f in gcall("GET", "/{group}").json()["faces"]]
    assert len(members) >= 2
    new = gcall("POST", "/{group}/split", json={"faces": members[-1:]}).json()["new"]["id"]
    gcall("POST", "/{group}/merge", json={"other": new})
    face = members[-1]
    gcall("POST", "/faces/{face}/not", json={"group": group})
    gcall("POST", "/faces/{face}/move", json={"group": group})
    gcall("POST", "/{group}/name", json={"name": "Someone"})
    gcall("POST", "/recluster")
    assert seen == set(declared), f"routes not called: {set(declared) - seen}"
    # error bodies: the ErrorOut model, exactly
    for r in (
        httpx.get(f"{url}/v1/galleries/nowhere"),
        httpx.post(f"{url}/v1/verify", files={"image1": a}),
        httpx.post(f"{url}/v1/detect", files=[("images", b"junk")], params={"x": 1}),
        httpx.get(f"{url}/v1/nothing"),
    ):
        assert r.status_code >= 400
        _conforms(schemas.ErrorOut, r.json(), r.url.path)
