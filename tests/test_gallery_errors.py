"""One error contract: every public Gallery function, given arguments it cannot use, raises
an NpcfaceError subclass (argument errors are ValueErrors too), and leaves the gallery as it
was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npcface.errors import (
    EmbeddingError,
    GalleryArgumentError,
    GalleryError,
    InvalidArgumentError,
    NpcfaceError,
)
from npcface.gallery import Gallery

DIM = 8
V = np.eye(DIM, dtype=np.float32)[0]

BAD_CREATE = {
    "path None": lambda p: Gallery.create(None, DIM),
    "path int": lambda p: Gallery.create(5, DIM),
    "path empty": lambda p: Gallery.create("", DIM),
    "unknown scheme": lambda p: Gallery.create("nosuch://x", DIM),
    "dim 0": lambda p: Gallery.create(p, 0),
    "dim -3": lambda p: Gallery.create(p, -3),
    "dim 2.5": lambda p: Gallery.create(p, 2.5),
    "dim str": lambda p: Gallery.create(p, "eight"),
    "dim None": lambda p: Gallery.create(p, None),
    "dim True": lambda p: Gallery.create(p, True),
    "metric": lambda p: Gallery.create(p, DIM, metric="l3"),
    "metric None": lambda p: Gallery.create(p, DIM, metric=None),
    "index junk": lambda p: Gallery.create(p, DIM, index="NotAnIndex7"),
    "index empty": lambda p: Gallery.create(p, DIM, index=""),
    "index None": lambda p: Gallery.create(p, DIM, index=None),
    "index int": lambda p: Gallery.create(p, DIM, index=7),
    "dtype": lambda p: Gallery.create(p, DIM, dtype="float64"),
    "model int": lambda p: Gallery.create(p, DIM, model=5),
    "model empty": lambda p: Gallery.create(p, DIM, model=" "),
    "params list": lambda p: Gallery.create(p, DIM, search_params=[1]),
    "params unknown": lambda p: Gallery.create(p, DIM, search_params={"foo": 3}),
    "params zero": lambda p: Gallery.create(
        p, DIM, index="HNSW32,Flat", search_params={"efSearch": 0}
    ),
    "params float": lambda p: Gallery.create(
        p, DIM, index="HNSW32,Flat", search_params={"efSearch": 1.5}
    ),
    "params str": lambda p: Gallery.create(
        p, DIM, index="HNSW32,Flat", search_params={"efSearch": "x"}
    ),
    "params nan": lambda p: Gallery.create(
        p, DIM, index="HNSW32,Flat", search_params={"efSearch": float("nan")}
    ),
    "params n/a": lambda p: Gallery.create(
        p, DIM, index="HNSW32,Flat", search_params={"nprobe": 4}
    ),
}

BAD_OPEN = {
    "path None": lambda p: Gallery.open(None),
    "missing": lambda p: Gallery.open(p.parent / "nothing"),
    "on_bad_index": lambda p: Gallery.open(p, on_bad_index="ignore"),
    "unknown scheme": lambda p: Gallery.open("nosuch://x"),
}

BAD_CALLS = {
    # add
    "add name None": lambda g: g.add(None, V),
    "add name int": lambda g: g.add(7, V),
    "add name empty": lambda g: g.add("  ", V),
    "add name long": lambda g: g.add("x" * 5000, V),
    "add dim": lambda g: g.add("a", np.ones(DIM + 1)),
    "add 3-d": lambda g: g.add("a", np.ones((1, 1, DIM))),
    "add scalar": lambda g: g.add("a", 3.0),
    "add None": lambda g: g.add("a", None),
    "add text": lambda g: g.add("a", "abcdefgh"),
    "add ragged": lambda g: g.add("a", [[1.0] * DIM, [1.0]]),
    "add complex": lambda g: g.add("a", np.ones(DIM, dtype=complex)),
    "add bool": lambda g: g.add("a", np.ones(DIM, dtype=bool)),
    "add object": lambda g: g.add("a", np.array([object()] * DIM)),
    "add nan": lambda g: g.add("a", np.full(DIM, np.nan)),
    "add inf": lambda g: g.add("a", np.r_[np.inf, np.ones(DIM - 1)]),
    "add zero": lambda g: g.add("a", np.zeros(DIM)),
    "add metadata str": lambda g: g.add("a", V, metadata="x"),
    "add metadata list": lambda g: g.add("a", V, metadata=[1, 2]),
    "add metadata not json": lambda g: g.add("a", V, metadata={"x": object()}),
    "add sources int": lambda g: g.add("a", V, sources=5),
    "add sources str": lambda g: g.add("a", V, sources="path.jpg"),
    "add sources length": lambda g: g.add("a", V, sources=["x", "y"]),
    "add sources item": lambda g: g.add("a", V, sources=[3]),
    "add hashes item": lambda g: g.add("a", V, content_hashes=[object()]),
    # add_many
    "add_many names str": lambda g: g.add_many("ab", np.ones((2, DIM))),
    "add_many names None": lambda g: g.add_many(None, np.ones((2, DIM))),
    "add_many count": lambda g: g.add_many(["a"], np.ones((2, DIM))),
    "add_many bad name": lambda g: g.add_many(["a", ""], np.ones((2, DIM))),
    "add_many dim": lambda g: g.add_many(["a"], np.ones((1, 3))),
    # removal
    "remove unknown": lambda g: g.remove("nobody"),
    "remove None": lambda g: g.remove(None),
    "remove_many None": lambda g: g.remove_many(None),
    "remove_many int": lambda g: g.remove_many(5),
    "remove_many unknown": lambda g: g.remove_many(["known", "nobody"]),
    "remove_templates str": lambda g: g.remove_templates("1"),
    "remove_templates float": lambda g: g.remove_templates([1.5]),
    "remove_templates None": lambda g: g.remove_templates(None),
    "remove_templates item": lambda g: g.remove_templates([None]),
    # search and identify
    "search k 0": lambda g: g.search(V, k=0),
    "search k -1": lambda g: g.search(V, k=-1),
    "search k 1.5": lambda g: g.search(V, k=1.5),
    "search k str": lambda g: g.search(V, k="3"),
    "search k None": lambda g: g.search(V, k=None),
    "search k nan": lambda g: g.search(V, k=float("nan")),
    "search k True": lambda g: g.search(V, k=True),
    "search dim": lambda g: g.search(np.ones(DIM - 1)),
    "search None": lambda g: g.search(None),
    "search nan": lambda g: g.search(np.full(DIM, np.nan)),
    "search zero": lambda g: g.search(np.zeros((2, DIM))),
    "search 3-d": lambda g: g.search(np.ones((2, 2, DIM))),
    "identify 2-d": lambda g: g.identify(np.ones((2, DIM)), 0.5),
    "identify threshold str": lambda g: g.identify(V, "high"),
    "identify threshold None": lambda g: g.identify(V, None),
    "identify threshold nan": lambda g: g.identify(V, float("nan")),
    "identify dim": lambda g: g.identify(np.ones(DIM + 2), 0.5),
    # settings and upkeep
    "templates None": lambda g: g.templates(None),
    "set_model None": lambda g: g.set_model(None),
    "set_model empty": lambda g: g.set_model(""),
    "set_search_params unknown": lambda g: g.set_search_params(foo=3),
    "set_search_params n/a": lambda g: g.set_search_params(nprobe=3),
    "set_search_params zero": lambda g: g.set_search_params(efSearch=0),
    "set_search_params str": lambda g: g.set_search_params(efSearch="many"),
    "rebuild junk": lambda g: g.rebuild("NotAnIndex7"),
    "rebuild int": lambda g: g.rebuild(5),
    "rebuild empty": lambda g: g.rebuild(""),
    "compact vacuum str": lambda g: g.compact(vacuum="yes"),
}

EMBEDDING_CASES = {
    *(
        f"add {w}"
        for w in [
            "3-d",
            "None",
            "bool",
            "complex",
            "dim",
            "inf",
            "nan",
            "object",
            "ragged",
            "scalar",
            "text",
            "zero",
        ]
    ),
    *(f"search {w}" for w in ("3-d", "None", "dim", "nan", "zero")),
    "add_many dim",
    "identify 2-d",
    "identify dim",
}
"""Cases whose error is about the vectors: also an EmbeddingError."""


def _assert_contract(exc: BaseException, name: str) -> None:
    assert isinstance(exc, NpcfaceError), f"{name}: {type(exc).__mro__}"
    assert isinstance(exc, GalleryError), f"{name}: {type(exc).__mro__}"
    assert str(exc), name


@pytest.mark.parametrize("name", sorted(BAD_CREATE))
def test_create_with_bad_arguments(tmp_path: Path, name: str) -> None:
    path = tmp_path / "g"
    with pytest.raises(NpcfaceError) as info:
        BAD_CREATE[name](path)
    _assert_contract(info.value, name)
    assert isinstance(info.value, InvalidArgumentError) and isinstance(info.value, ValueError)
    assert not (path / "gallery.db").exists()  # nothing half-made
    Gallery.create(path, DIM).close()  # and no lock left behind


@pytest.mark.parametrize("name", sorted(BAD_OPEN))
def test_open_with_bad_arguments(tmp_path: Path, name: str) -> None:
    path = tmp_path / "g"
    Gallery.create(path, DIM).close()
    with pytest.raises(NpcfaceError) as info:
        BAD_OPEN[name](path)
    _assert_contract(info.value, name)
    Gallery.open(path).close()  # no lock left behind


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory):
    g = Gallery.create(tmp_path_factory.mktemp("bad") / "g", DIM, index="HNSW32,Flat")
    g.add("known", V, metadata={"k": 1})
    yield g
    g.close()


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_methods_with_bad_arguments(gallery: Gallery, name: str) -> None:
    before = (gallery.template_counts(), gallery.info().index_spec, gallery.info().search_params)
    with pytest.raises(NpcfaceError) as info:
        BAD_CALLS[name](gallery)
    _assert_contract(info.value, name)
    if "unknown" in name and name.startswith("remove"):
        assert "no identity named 'nobody'" in str(info.value)
    else:
        assert isinstance(info.value, GalleryArgumentError) and isinstance(info.value, ValueError)
    if name in EMBEDDING_CASES:
        assert isinstance(info.value, EmbeddingError), name
    after = (gallery.template_counts(), gallery.info().index_spec, gallery.info().search_params)
    assert after == before == ({"known": 1}, "HNSW32,Flat", {"efSearch": 256})
    assert gallery.search(V, k=1)[0][0].identity == "known"


def test_read_only_and_closed_galleries_refuse_with_gallery_errors(tmp_path: Path) -> None:
    path = tmp_path / "g"
    with Gallery.create(path, DIM) as g:
        g.add("known", V)
    writes = {
        "add": lambda g: g.add("b", V),
        "add empty": lambda g: g.add("b", np.zeros((0, DIM))),
        "add_many": lambda g: g.add_many(["b"], V[None]),
        "remove": lambda g: g.remove("known"),
        "remove_many": lambda g: g.remove_many(["known"]),
        "remove_templates": lambda g: g.remove_templates([1]),
        "set_model": lambda g: g.set_model("m"),
        "set_search_params": lambda g: g.set_search_params(efSearch=None),
        "save": lambda g: g.save(),
        "rebuild": lambda g: g.rebuild(),
        "compact": lambda g: g.compact(),
    }
    reads = {
        "search": lambda g: g.search(V),
        "identify": lambda g: g.identify(V, 0.5),
        "len": len,
        "contains": lambda g: "known" in g,
        "identities": lambda g: g.identities(),
        "template_counts": lambda g: g.template_counts(),
        "templates": lambda g: g.templates("known"),
        "content_hashes": lambda g: g.content_hashes(),
        "model": lambda g: g.model,
        "factory": lambda g: g.factory,
        "tombstones": lambda g: g.tombstones,
        "info": lambda g: g.info(),
        "check": lambda g: g.check(),
        "refresh": lambda g: g.refresh(),
    }
    with Gallery.open(path, readonly=True) as r:
        for name, call in writes.items():
            with pytest.raises(GalleryError, match="read-only"):
                call(r)
            assert r.identities() == ["known"], name
    closed = Gallery.open(path)
    closed.close()
    closed.close()  # idempotent
    for call in {**writes, **reads}.values():
        with pytest.raises(GalleryError, match="closed"):
            call(closed)
    with Gallery.open(path) as g:
        assert g.identities() == ["known"]
