"""Gallery behaviour on every backend (local FAISS + SQLite, Milvus Lite), against numpy.

The same assertions run on each backend: search agrees with brute force, identities are
collapsed, deletion, metadata, open-set identify, persistence across reopen and the model
check. Milvus Lite tests skip when pymilvus / milvus-lite are not installed.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_gallery_core import DIM, assert_same, brute_force, clustered, queries_near

from npcface.errors import GalleryError
from npcface.gallery import Gallery, parse_gallery_uri

BACKENDS = ["local", "milvus-lite", "milvus-server"]
_counter = itertools.count()


def _have_milvus_lite() -> str | None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        return f"Milvus Lite not installed ({exc.name}): pip install 'npcface[milvus]'"
    return None


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One Milvus Lite file for the module."""
    reason = _have_milvus_lite()
    if reason:
        pytest.skip(reason)
    # one file, a collection per test; the embedded server starts with each test's first
    # gallery and stops when its last one closes (a server kept idle for minutes between
    # tests stopped answering new connections)
    yield tmp_path_factory.mktemp("milvus") / "galleries.db"


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus standalone server (the ``milvus`` package's ``milvus-server``: embedded
    etcd and message queue) on free loopback ports, for this module (one server per machine
    at a time: the other modules start their own): its address."""
    from milvus_server import MilvusServer, why_not

    reason = _have_milvus_lite() or why_not()
    if reason:
        pytest.skip(reason)
    with MilvusServer(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server.address


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, address) of a fresh gallery location."""
    if request.param == "local":
        return "local", str(tmp_path / "g")
    if request.param == "milvus-server":
        server = request.getfixturevalue("milvus_server")
        return "milvus", f"milvus://{server}/t{next(_counter)}"
    lite = request.getfixturevalue("lite_file")
    return "milvus-lite", f"milvus-lite://{lite}?collection=t{next(_counter)}"


# ------------------------------------------------------------------ addresses
def test_uri_parsing() -> None:
    loc = parse_gallery_uri("milvus://db.example:19531/staff")
    assert (loc.kind, loc.server, loc.collection) == ("milvus", "http://db.example:19531", "staff")
    assert parse_gallery_uri("milvus://h/staff").server == "http://h:19530"
    assert parse_gallery_uri("milvus+https://h:443/s").server == "https://h:443"
    lite = parse_gallery_uri("milvus-lite:///tmp/x/faces.db")
    assert (lite.kind, str(lite.path), lite.collection) == (
        "milvus-lite",
        "/tmp/x/faces.db",
        "gallery",
    )
    assert parse_gallery_uri("milvus-lite:///a/b.db?collection=c2").collection == "c2"
    assert parse_gallery_uri("some/dir").kind == "local"
    assert parse_gallery_uri("milvus://h/s").consistency is None  # the default: Strong
    assert parse_gallery_uri("milvus://h/s?consistency=bounded").consistency == "Bounded"
    assert (
        parse_gallery_uri("milvus-lite:///a/b.db?collection=c&consistency=SESSION").consistency
        == "Session"
    )
    for bad, msg in [
        ("milvus://h/s?consistency=weak", "consistency must be one of"),
        ("milvus-lite://rel/x.db", "absolute"),
        ("milvus-lite:///a/x.sqlite", ".db"),
        ("milvus://host:19530/", "name the gallery"),
        ("milvus://host:19530/9bad", "collection name"),
        ("milvus://u:p@host/x", "credentials"),
        ("redis://host/x", "unknown gallery scheme"),
    ]:
        with pytest.raises(GalleryError, match=msg):
            parse_gallery_uri(bad)


def test_create_returns_the_backend_asked_for(where: tuple[str, str]) -> None:
    backend, uri = where
    with Gallery.create(uri, DIM) as g:
        # one facade (checks, locking) whatever the storage behind it
        assert type(g) is Gallery
        assert g.info().device == {"local": "cpu"}.get(backend, backend)
        assert len(g) == 0 and g.search(np.ones(DIM, np.float32), k=3) == [[]]
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(uri, DIM)


def test_consistency_named_in_the_uri(where: tuple[str, str]) -> None:
    backend, uri = where
    if backend == "local":
        pytest.skip("a local gallery has no consistency levels: every read sees every write")
    names, vecs, _ = clustered(20)
    with Gallery.create(uri, DIM) as g:
        g.add_many(names, vecs)
    sep = "&" if "?" in uri else "?"
    with Gallery.open(f"{uri}{sep}consistency=bounded") as g:
        assert g._backend._consistency == "Bounded"  # what every read passes to Milvus
        deadline = time.monotonic() + 30  # Bounded reads may lag by Milvus's graceful time
        while len(g.search(vecs[:1], k=1)[0]) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert g.search(vecs[:1], k=1)[0][0].identity == names[0]
    with Gallery.open(uri) as g:
        assert g._backend._consistency == "Strong"


# ------------------------------------------------------------------- behaviour
def test_search_matches_brute_force(where: tuple[str, str]) -> None:
    names, vecs, centres = clustered(150)
    q = queries_near(centres, 25)
    with Gallery.create(where[1], DIM) as g:
        tids = np.array(g.add_many(names[:100], vecs[:100]) + g.add_many(names[100:], vecs[100:]))
        assert len(set(tids.tolist())) == len(vecs)
        expected = brute_force(names, vecs, np.ones(len(names), bool), q, 5)
        assert_same(g.search(q, k=5), expected, tids)
        assert len(g) == 150 and g.info().templates == len(vecs)


def test_identities_not_crowded_out_by_many_templates(where: tuple[str, str]) -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal(DIM).astype(np.float32)
    q /= np.linalg.norm(q)
    # one identity with 60 templates all very close to q, 10 others further away
    close = q + 0.05 * rng.standard_normal((60, DIM)).astype(np.float32)
    far = q + 1.0 * rng.standard_normal((10, DIM)).astype(np.float32)
    names = ["crowd"] * 60 + [f"other{i}" for i in range(10)]
    vecs = np.vstack([close, far]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with Gallery.create(where[1], DIM) as g:
        # the crowd first, so that a per-identity template count cannot hide the problem
        tids = np.array(g.add_many(names, vecs))
        res = g.search(q, k=5)[0]
        assert len({m.identity for m in res}) == 5
        assert_same([res], brute_force(names, vecs, np.ones(70, bool), q[None], 5), tids)


def test_deletion_matches_brute_force(where: tuple[str, str]) -> None:
    names, vecs, centres = clustered(120, seed=7)
    q = queries_near(centres, 20, seed=8)
    with Gallery.create(where[1], DIM) as g:
        tids = np.array(g.add_many(names, vecs))
        gone = ["id0003", "id0010", 'odd "name" \\ here']
        g.add(gone[2], vecs[0])
        tids = np.append(tids, -1)  # the extra template is deleted below
        names2 = [*names, gone[2]]
        vecs2 = np.vstack([vecs, vecs[:1]])
        n_gone = sum(n in gone[:2] for n in names) + 1
        assert g.remove_many(gone[:2]) + g.remove(gone[2]) == n_gone
        with pytest.raises(GalleryError, match="no identity named"):
            g.remove("id0003")
        alive = np.array([n not in gone for n in names2])
        assert_same(g.search(q, k=4), brute_force(names2, vecs2, alive, q, 4), tids)
        assert len(g) == 118 and not set(gone) & set(g.identities())
        assert g.info().templates == int(alive.sum())


def test_remove_templates_matches_brute_force(where: tuple[str, str]) -> None:
    names, vecs, centres = clustered(60, seed=21)
    q = queries_near(centres, 12, seed=22)
    with Gallery.create(where[1], DIM) as g:
        tids = np.array(g.add_many(names, vecs))
        # every template of the first identity (which disappears), one of the second
        first = names[0]
        second = next(n for n in dict.fromkeys(names) if n != first and names.count(n) >= 2)
        drop = [i for i, n in enumerate(names) if n == first]
        drop.append(next(i for i, n in enumerate(names) if n == second))
        assert g.remove_templates([int(tids[i]) for i in drop] + [10**12]) == len(drop)
        alive = np.ones(len(names), bool)
        alive[drop] = False
        assert first not in g and first not in g.identities()
        assert g.template_counts()[second] == names.count(second) - 1
        assert_same(g.search(q, k=4), brute_force(names, vecs, alive, q, 4), tids)
        assert g.info().templates == int(alive.sum())


def test_identify_threshold_and_metadata(where: tuple[str, str]) -> None:
    names, vecs, centres = clustered(50)
    with Gallery.create(where[1], DIM) as g:
        g.add_many(names, vecs)
        g.add("id0001", vecs[names.index("id0001")], metadata={"dept": "x"})
        g.add("id0001", vecs[names.index("id0001")], metadata={"badge": 7})
        q = queries_near(centres[1:2], 1)[0]
        best = g.search(q, k=1)[0][0]
        assert best.identity == "id0001"
        assert best.metadata == {"dept": "x", "badge": 7}
        assert g.identify(q, threshold=best.similarity - 1e-6) == best
        assert g.identify(q, threshold=best.similarity + 1e-3) is None
        everyone = g.search(q, k=1000)[0]
        assert len(everyone) == 50 and {m.identity for m in everyone} == set(names)
        assert [m.metadata for m in everyone if m.identity == "id0002"] == [None]
        assert g.identities()[:3] == ["id0000", "id0001", "id0002"]  # enrolment order
        assert g.metadata("id0001") == {"dept": "x", "badge": 7}
        assert g.metadata("id0002") == {}
        assert g.metadata("nobody") is None


PERSIST_SCRIPT = """
import sys, numpy as np
from npcface.gallery import Gallery
with Gallery.open(sys.argv[1], readonly=True) as g:
    q = np.load(sys.argv[2])
    for row in g.search(q, k=2):
        print(";".join(f"{m.identity},{m.similarity:.6f},{m.template_id}" for m in row))
    print(g.model, len(g), sorted(g.content_hashes())[:2])
"""


def test_persists_across_reopen_in_another_process(where: tuple[str, str], tmp_path: Path) -> None:
    names, vecs, centres = clustered(40, seed=11)
    q = queries_near(centres, 5, seed=12)
    hashes = [f"h{i:05d}" for i in range(len(names))]
    with Gallery.create(where[1], DIM, model="sface") as g:
        tids = np.array(g.add_many(names, vecs, content_hashes=hashes))
        g.remove("id0005")
    alive = np.array([n != "id0005" for n in names])
    np.save(tmp_path / "q.npy", q)
    out = subprocess.run(
        [sys.executable, "-c", PERSIST_SCRIPT, where[1], str(tmp_path / "q.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    for line, want in zip(lines[:-1], brute_force(names, vecs, alive, q, 2), strict=True):
        got = [part.split(",") for part in line.split(";")]
        assert [g_[0] for g_ in got] == [w[0] for w in want]
        np.testing.assert_allclose([float(g_[1]) for g_ in got], [w[1] for w in want], atol=1e-5)
        assert [int(g_[2]) for g_ in got] == [int(tids[w[2]]) for w in want]
    assert lines[-1] == "sface 39 ['h00000', 'h00001']"
    with Gallery.open(where[1]) as g:  # and in this process again, writable
        assert g.model == "sface" and len(g) == 39 and "id0005" not in g
        assert len(g.content_hashes()) == int(alive.sum())


def test_model_check_and_input_validation(where: tuple[str, str]) -> None:
    with Gallery.create(where[1], DIM) as g:
        assert g.model is None
        g.check_model("sface", DIM)  # first use records the model
        assert g.model == "sface"
        with pytest.raises(GalleryError, match="sface"):
            g.check_model("arcface", DIM)
        with pytest.raises(GalleryError, match="dimensional"):
            g.check_model("sface", DIM + 1)
        with pytest.raises(GalleryError, match="dimension 7"):
            g.add("x", np.ones(7, np.float32))
        with pytest.raises(GalleryError, match="zero"):
            g.add("x", np.zeros(DIM, np.float32))
        with pytest.raises(GalleryError, match="NaN"):
            g.search(np.full(DIM, np.nan, np.float32))
        with pytest.raises(GalleryError, match="non-empty"):
            g.add("", np.ones(DIM, np.float32))
        with pytest.raises(GalleryError, match="k must be"):
            g.search(np.ones(DIM, np.float32), k=0)
    with Gallery.open(where[1], readonly=True) as g:
        assert g.model == "sface"
        with pytest.raises(GalleryError, match="read-only"):
            g.add("x", np.ones(DIM, np.float32))


# ---------------------------------------------------------- Milvus specifics
def test_milvus_index_choice_and_override(lite_file: Path) -> None:
    import npcface.gallery.milvus.tiers as mv
    from npcface.gallery.milvus import auto_index, parse_index

    assert auto_index(10).index_type == "FLAT" and auto_index(60_000).index_type == "HNSW"
    assert auto_index(2_000_000, lite=True).index_type == "FLAT"  # Lite: exact at any size
    # default ef: grows with a server's gallery (measured on the server at 100k and 1M: ef
    # 512 kept 0.989 of exact search's rank-1 at 1M, 1024 0.998); Lite's graphs stay one
    # 100k-row segment
    sizes = (60_000, 200_000, 200_001, 500_000, 500_001, 1_000_000, 5_000_000)
    assert [mv._hnsw_ef(n) for n in sizes] == [256, 256, 512, 512, 1024, 1024, 1024]
    assert mv._hnsw_ef(5_000_000, lite=True) == 256
    assert parse_index("HNSW:M=16,efConstruction=64").build == {"M": 16, "efConstruction": 64}
    with pytest.raises(GalleryError, match="Milvus Lite cannot build IVF_PQ"):
        parse_index("IVF_PQ:nlist=64,m=8", lite=True)
    with pytest.raises(GalleryError, match="unknown Milvus index"):
        parse_index("IVF9000")
    names, vecs, centres = clustered(200, seed=4)
    q = queries_near(centres, 20, seed=5)
    uri = f"milvus-lite://{lite_file}?collection=hnsw{next(_counter)}"
    with Gallery.create(uri, DIM, index="HNSW:M=16,efConstruction=100") as g:
        tids = np.array(g.add_many(names, vecs))
        assert g.factory == "HNSW(M=16,efConstruction=100)"
        assert g.info().search_params == {"ef": 256}  # Lite's default
        g.set_search_params(ef=512)
        assert g.info().search_params == {"ef": 512}
        expected = brute_force(names, vecs, np.ones(len(names), bool), q, 3)
        assert_same(g.search(q, k=3), expected, tids)
        g.rebuild("FLAT")
        assert g.factory == "FLAT"
        assert_same(g.search(q, k=3), expected, tids)
    with pytest.raises(GalleryError, match="float32"):
        Gallery.create(f"milvus-lite://{lite_file}?collection=f16", DIM, dtype="float16")
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(f"milvus-lite://{lite_file}?collection=nothing_here")


def test_milvus_auto_index_moves_to_hnsw_as_it_grows(
    lite_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import npcface.gallery.milvus.tiers as mv

    monkeypatch.setattr(mv, "LITE_FLAT_MAX_TEMPLATES", 100)  # the server's tiering, on Lite
    names, vecs, centres = clustered(120, seed=9)
    q = queries_near(centres, 15, seed=10)
    uri = f"milvus-lite://{lite_file}?collection=grow{next(_counter)}"
    with Gallery.create(uri, DIM) as g:
        tids = g.add_many(names[:50], vecs[:50])
        assert g.factory == "FLAT"
        tids += g.add_many(names[50:], vecs[50:])
        assert g.factory.startswith("HNSW(") and g.info().index_spec == "auto"
        expected = brute_force(names, vecs, np.ones(len(names), bool), q, 3)
        assert_same(g.search(q, k=3), expected, np.array(tids))
    with Gallery.open(uri) as g:  # the switch is recorded
        assert g.factory.startswith("HNSW(")


def test_cli_gallery_commands_take_the_address(
    where: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from npcface.cli import main

    uri = where[1]
    assert main(["gallery", "create", uri, "--dim", str(DIM), "--model", "sface"]) == 0
    names, vecs, _ = clustered(6, seed=2)
    with Gallery.open(uri) as g:
        g.add_many(names, vecs)
    capsys.readouterr()
    assert main(["gallery", "list", uri, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"identity": n, "templates": names.count(n)} for n in dict.fromkeys(names)]
    assert main(["gallery", "remove", uri, "id0002"]) == 0
    assert f"{names.count('id0002')} templates" in capsys.readouterr().out
    assert main(["gallery", "info", uri, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["identities"], info["templates"], info["model"]) == (
        5,
        len(names) - names.count("id0002"),
        "sface",
    )
    assert main(["gallery", "remove", uri, "nobody"]) == 2  # unknown identity: an error


def test_the_same_error_classes_on_every_backend(where: tuple[str, str]) -> None:
    """A caller (the service, the CLI) tells conditions apart by class, whatever the
    backend: not found, exists, unknown identity, wrong vectors, closed."""
    from npcface.errors import (
        GalleryClosedError,
        GalleryEmbeddingError,
        GalleryExistsError,
        GalleryNotFoundError,
        IdentityNotFoundError,
    )

    _, addr = where
    assert not Gallery.exists(addr)
    with pytest.raises(GalleryNotFoundError):
        Gallery.open(addr)
    g = Gallery.create(addr, DIM)
    assert Gallery.exists(addr)
    with pytest.raises(GalleryExistsError):
        Gallery.create(addr, DIM)
    with pytest.raises(IdentityNotFoundError):
        g.remove("nobody")
    with pytest.raises(GalleryEmbeddingError):
        g.add("x", np.ones(DIM + 1, np.float32))
    g.close()
    with pytest.raises(GalleryClosedError):
        g.search(np.ones(DIM, np.float32))
