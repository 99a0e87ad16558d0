"""Gallery search, deletion and persistence, checked against brute-force numpy."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from npcface.errors import GalleryCorruptError, GalleryError
from npcface.gallery import Gallery
from npcface.gallery import index as ix

DIM = 32


def clustered(num_ids: int, seed: int = 0, max_templates: int = 4, noise: float = 0.6):
    """Identity names, template vectors (unit rows) and identity centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    names, rows = [], []
    for i in range(num_ids):
        for _ in range(int(rng.integers(1, max_templates + 1))):
            v = centres[i] + noise * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
            rows.append(v / np.linalg.norm(v))
            names.append(f"id{i:04d}")
    return names, np.array(rows, dtype=np.float32), centres


def queries_near(centres: np.ndarray, n: int, seed: int = 1, noise: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(centres), n)
    q = centres[pick] + noise * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def brute_force(names: list[str], vectors: np.ndarray, alive: np.ndarray, q: np.ndarray, k: int):
    """Per query: [(identity, best similarity, row index of that best template)] by numpy."""
    sims = q @ vectors.T
    out = []
    for row in sims:
        best: dict[str, tuple[float, int]] = {}
        for j in np.flatnonzero(alive):
            if names[j] not in best or row[j] > best[names[j]][0]:
                best[names[j]] = (float(row[j]), int(j))
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        out.append([(name, s, j) for name, (s, j) in ranked])
    return out


def enroll(g: Gallery, names: list[str], vectors: np.ndarray) -> np.ndarray:
    """Add in a few uneven batches; returns the template id of every row."""
    ids: list[int] = []
    for start, stop in [(0, 7), (7, len(names) // 2), (len(names) // 2, len(names))]:
        ids += g.add_many(names[start:stop], vectors[start:stop])
    return np.array(ids)


def assert_same(results, expected, tids: np.ndarray, atol: float = 1e-5) -> None:
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert [m.identity for m in got] == [w[0] for w in want]
        np.testing.assert_allclose([m.similarity for m in got], [w[1] for w in want], atol=atol)
        assert [m.template_id for m in got] == [int(tids[w[2]]) for w in want]


def abandon(g: Gallery) -> None:
    """Drop a gallery without saving its index, as a killed process would."""
    g._release()


# ------------------------------------------------------------------ exact search
@pytest.mark.parametrize(
    "index,params",
    [("auto", {}), ("Flat", {}), ("HNSW32,Flat", {"efSearch": 2048}), ("IVF8,Flat", {"nprobe": 8})],
)
def test_search_matches_brute_force(tmp_path: Path, index: str, params: dict) -> None:
    names, vecs, centres = clustered(400)
    g = Gallery.create(tmp_path / "g", DIM, index=index, search_params=params)
    tids = enroll(g, names, vecs)
    assert g.factory == (ix.FLAT_FACTORY if index == "auto" else ix.canonical_factory(index, DIM))
    q = queries_near(centres, 60)
    expected = brute_force(names, vecs, np.ones(len(names), bool), q, 5)
    assert_same(g.search(q, k=5), expected, tids)
    assert len(g) == 400 and g.info().templates == len(vecs)
    g.close()


def test_identities_not_crowded_out_by_many_templates(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal(DIM).astype(np.float32)
    q /= np.linalg.norm(q)
    # one identity with 60 templates all very close to q, 10 others further away
    close = q + 0.05 * rng.standard_normal((60, DIM)).astype(np.float32)
    far = q + 1.0 * rng.standard_normal((10, DIM)).astype(np.float32)
    names = ["crowd"] * 60 + [f"other{i}" for i in range(10)]
    vecs = np.vstack([close, far]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with Gallery.create(tmp_path / "g", DIM) as g:
        tids = np.array(g.add_many(names, vecs))
        res = g.search(q, k=5)[0]
        assert len({m.identity for m in res}) == 5
        assert_same([res], brute_force(names, vecs, np.ones(70, bool), q[None], 5), tids)


def test_identify_threshold_and_metadata(tmp_path: Path) -> None:
    names, vecs, centres = clustered(50)
    with Gallery.create(tmp_path / "g", DIM) as g:
        g.add_many(names, vecs)
        g.add("id0001", vecs[names.index("id0001")], metadata={"dept": "x"})
        g.add("id0001", vecs[names.index("id0001")], metadata={"badge": 7})
        q = queries_near(centres[1:2], 1)[0]
        best = g.search(q, k=1)[0][0]
        assert best.identity == "id0001"
        assert best.metadata == {"dept": "x", "badge": 7}
        assert g.identify(q, threshold=best.similarity - 1e-6) == best
        assert g.identify(q, threshold=best.similarity + 1e-3) is None
        assert g.search(q, k=1000)[0][-1].identity in g.identities()
        assert len(g.search(q, k=1000)[0]) == 50


def test_float16_storage_close_to_float32(tmp_path: Path) -> None:
    names, vecs, centres = clustered(200)
    q = queries_near(centres, 30)
    with Gallery.create(tmp_path / "g", DIM, dtype="float16") as g:
        g.add_many(names, vecs)
        got = g.search(q, k=1)
    want = brute_force(names, vecs, np.ones(len(names), bool), q, 1)
    assert [r[0].identity for r in got] == [w[0][0] for w in want]
    np.testing.assert_allclose([r[0].similarity for r in got], [w[0][1] for w in want], atol=2e-3)


def test_ip_metric_keeps_norms(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((20, DIM)).astype(np.float32) * 3
    q = rng.standard_normal(DIM).astype(np.float32)
    with Gallery.create(tmp_path / "g", DIM, metric="ip") as g:
        g.add_many([f"p{i}" for i in range(20)], vecs)
        best = g.search(q, k=1)[0][0]
    assert best.identity == f"p{int(np.argmax(vecs @ q))}"
    assert best.similarity == pytest.approx(float(np.max(vecs @ q)), rel=1e-5)


# ---------------------------------------------------------------------- deletion
@pytest.mark.parametrize(
    "index,params",
    [
        ("auto", {}),
        ("HNSW32,Flat", {"efSearch": 2048}),
        ("IVF8,Flat", {"nprobe": 8}),
        ("IDMap,IVF8,Flat", {"nprobe": 8}),  # FAISS's IDMap+IVF remove_ids is not trusted
    ],
)
def test_deletion_matches_brute_force(tmp_path: Path, index: str, params: dict) -> None:
    names, vecs, centres = clustered(400, seed=7)
    g = Gallery.create(tmp_path / "g", DIM, index=index, search_params=params)
    tids = enroll(g, names, vecs)
    assert g.factory == (ix.FLAT_FACTORY if index == "auto" else ix.canonical_factory(index, DIM))
    alive = np.ones(len(names), bool)
    gone = [f"id{i:04d}" for i in range(0, 400, 3)]
    assert g.remove(gone[0]) == names.count(gone[0])
    assert g.remove_many(gone[1:]) == sum(n in set(gone[1:]) for n in names)
    alive &= np.array([n not in set(gone) for n in names])
    drop = np.flatnonzero(alive)[::5][:40]
    assert g.remove_templates(tids[drop].tolist()) == len(drop)
    assert g.remove_templates(tids[drop].tolist()) == 0  # already gone
    alive[drop] = False
    q = queries_near(centres, 80, seed=9)
    expected = brute_force(names, vecs, alive, q, 5)
    assert_same(g.search(q, k=5), expected, tids)
    assert g.check().ok
    info = g.info()
    assert info.templates == int(alive.sum())
    # erasure: an index that cannot remove was filled again without the deleted templates
    assert info.tombstones == 0
    assert info.index_vectors == int(alive.sum())
    g.close()
    # the deletions survive a reopen, and compact() keeps them so
    with Gallery.open(tmp_path / "g") as g2:
        assert_same(g2.search(q, k=5), expected, tids)
        before = g2.tombstones
        report = g2.compact()
        assert (report.dropped, report.detail.split(";")[0]) == (
            before,
            f"dropped {before} deleted templates",
        )
        assert g2.info().tombstones == 0 and g2.check().ok
        assert_same(g2.search(q, k=5), expected, tids)
        with pytest.raises(GalleryError, match="no identity named"):
            g2.remove(gone[0])


# ------------------------------------------------------------------- persistence
def test_round_trip_and_catch_up(tmp_path: Path) -> None:
    names, vecs, centres = clustered(300, seed=11)
    q = queries_near(centres, 40, seed=12)
    half = len(names) // 2
    g = Gallery.create(tmp_path / "g", DIM)
    tids = list(g.add_many(names[:half], vecs[:half]))
    g.close()
    g = Gallery.open(tmp_path / "g")
    tids += g.add_many(names[half:], vecs[half:])
    # a crash right after the deletion committed, before the index was re-saved without it
    g._backend.store.remove_identities(["id0002"])
    abandon(g)  # the index on disk misses the second half and the deletion
    snap = ix.read_snapshot(tmp_path / "g")
    assert snap.last_template_id == tids[half - 1]
    alive = np.array([n != "id0002" for n in names])
    with Gallery.open(tmp_path / "g") as g:
        assert g.check().ok
        assert_same(g.search(q, k=3), brute_force(names, vecs, alive, q, 3), np.array(tids))
    assert ix.read_snapshot(tmp_path / "g").last_template_id == tids[-1]


def test_readonly_sees_committed_templates_while_writer_open(tmp_path: Path) -> None:
    names, vecs, centres = clustered(50)
    writer = Gallery.create(tmp_path / "g", DIM)
    writer.add_many(names, vecs)  # committed, index not saved
    with pytest.raises(GalleryError, match="another process|open for writing"):
        Gallery.open(tmp_path / "g")
    reader = Gallery.open(tmp_path / "g", readonly=True)
    q = queries_near(centres, 10)
    assert [r[0].identity for r in reader.search(q, k=1)] == [
        r[0].identity for r in writer.search(q, k=1)
    ]
    with pytest.raises(GalleryError, match="read-only"):
        reader.add("x", vecs[0])
    # the writer goes on; the reader sees it after refresh()
    writer.remove("id0003")
    writer.add("newcomer", q[0])
    assert reader.refresh() == names.count("id0003") + 1
    assert reader.search(q[0], k=1)[0][0].identity == "newcomer"
    assert all(m.identity != "id0003" for r in reader.search(q, k=60) for m in r)
    assert len(reader) == len(writer) == 50 and reader.check().ok
    reader.close()
    writer.close()


def _damage(path: Path, how: str) -> None:
    snap = ix.read_snapshot(path)
    f = path / snap.file
    data = bytearray(f.read_bytes())
    if how == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif how == "delete":
        f.unlink()
    elif how == "sidecar":
        (path / ix.SIDECAR_NAME).write_text("{not json")
    elif how == "garbage":  # a well-formed sidecar describing a garbage file
        garbage = b"\x00garbage" * 100
        f.write_bytes(garbage)
        side = json.loads((path / ix.SIDECAR_NAME).read_text())
        import hashlib

        side["sha256"] = hashlib.sha256(garbage).hexdigest()
        side["size"] = len(garbage)
        (path / ix.SIDECAR_NAME).write_text(json.dumps(side))


@pytest.mark.parametrize("how", ["truncate", "flip", "delete", "sidecar", "garbage"])
def test_damaged_index_is_rebuilt_or_refused(tmp_path: Path, how: str) -> None:
    names, vecs, centres = clustered(120, seed=4)
    with Gallery.create(tmp_path / "g", DIM) as g:
        tids = np.array(g.add_many(names, vecs))
    _damage(tmp_path / "g", how)
    with pytest.raises(GalleryCorruptError):
        Gallery.open(tmp_path / "g", on_bad_index="raise")
    q = queries_near(centres, 20)
    with Gallery.open(tmp_path / "g") as g:  # default: rebuild from SQLite
        assert g.check().ok
        assert_same(
            g.search(q, k=3), brute_force(names, vecs, np.ones(len(names), bool), q, 3), tids
        )
    ix.load_index(tmp_path / "g", dim=DIM)  # and the rebuilt index was saved


def test_index_of_another_type_or_newer_than_database_is_rebuilt(tmp_path: Path) -> None:
    names, vecs, centres = clustered(100, seed=8)
    with Gallery.create(tmp_path / "g", DIM) as g:
        g.add_many(names[:50], vecs[:50])
    old_db = (tmp_path / "g" / "gallery.db").read_bytes()
    with Gallery.open(tmp_path / "g") as g:
        g.add_many(names[50:], vecs[50:])
    # database restored from the older copy: the saved index knows templates it lacks
    for suffix in ("-wal", "-shm"):
        (tmp_path / "g" / f"gallery.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "g" / "gallery.db").write_bytes(old_db)
    with pytest.raises(GalleryCorruptError, match="newer than the database"):
        Gallery.open(tmp_path / "g", on_bad_index="raise")
    with Gallery.open(tmp_path / "g") as g:
        assert g.info().templates == 50 and g.check().ok and g.info().index_vectors == 50
        g.rebuild("HNSW32,Flat")
        assert g.factory == "IDMap,HNSW32,Flat"
    # the saved index is an HNSW; claim the gallery uses Flat: mismatch -> rebuild as Flat
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    con.execute("UPDATE meta SET value = ? WHERE key = 'factory'", (json.dumps("IDMap2,Flat"),))
    con.commit()
    con.close()
    with Gallery.open(tmp_path / "g") as g:
        assert g.factory == "IDMap2,Flat" and g.check().ok


def test_schema_version_and_non_gallery_files(tmp_path: Path) -> None:
    with Gallery.create(tmp_path / "g", DIM) as g:
        g.add("a", np.ones(DIM))
    con = sqlite3.connect(tmp_path / "g" / "gallery.db")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(GalleryCorruptError, match="newer npcface"):
        Gallery.open(tmp_path / "g")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "gallery.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryCorruptError, match="damaged or not a database"):
        Gallery.open(tmp_path / "h")
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(tmp_path / "nothing")
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(tmp_path / "g", DIM)


# ----------------------------------------------------------------- index choice
def test_auto_moves_up_the_tiers_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ix, "FLAT_MAX_TEMPLATES", 700)
    monkeypatch.setattr(ix, "IVF_MIN_TEMPLATES", 1400)
    monkeypatch.setattr(ix, "IVF_NLIST", 8)
    names, vecs, centres = clustered(800, seed=2)
    assert len(names) > 1400
    scan, ivf = ix.scan_factory(DIM), ix.ivf_factory(DIM)
    assert (scan, ivf) == ("IDMap,PQ8x4fs,RFlat", "IDMap,IVF8,PQ8x4fs,RFlat")
    q = queries_near(centres, 30)
    with Gallery.create(tmp_path / "g", DIM) as g:
        tids = np.array(g.add_many(names[:650], vecs[:650]))
        assert g.factory == ix.FLAT_FACTORY
        tids = np.r_[tids, g.add_many(names[650:1000], vecs[650:1000])]
        assert g.factory == scan and g.info().search_params == {"k_factor": 64}
        alive = np.zeros(len(names), bool)
        alive[:1000] = True
        want = brute_force(names, vecs, alive, q, 4)
        top1 = [r[0].identity for r in g.search(q, 1)]  # 4-bit codes of 4 dims: coarse
        assert np.mean([a == w[0][0] for a, w in zip(top1, want, strict=True)]) >= 0.9
        g.set_search_params(k_factor=256)  # re-ranks every template here: exact
        assert_same(g.search(q, 4), want, tids)
        tids = np.r_[tids, g.add_many(names[1000:], vecs[1000:])]
        assert g.factory == ivf
        assert g.info().search_params == {"nprobe": 8, "k_factor": 256}
        alive[:] = True
        assert_same(g.search(q, 4), brute_force(names, vecs, alive, q, 4), tids)
        with pytest.raises(GalleryError, match="does not apply"):
            g.set_search_params(efSearch=4)
        g.remove("id0001")  # fast-scan PQ cannot remove: filled again without it (erasure)
        assert g.tombstones == 0 and g.info().index_vectors == len(names) - names.count("id0001")
        assert g.factory == ivf and g.check().ok  # the trained index type is kept
    with Gallery.open(tmp_path / "g") as g:  # the choice and the override persist
        assert g.factory == ivf and g.info().search_params == {"nprobe": 8, "k_factor": 256}
        alive = np.array([n != "id0001" for n in names])
        assert_same(g.search(q, 4), brute_force(names, vecs, alive, q, 4), tids)
        g.remove_many([f"id{i:04d}" for i in range(2, 700)])
        g.compact()  # small again: back to exact search
        assert g.factory == ix.FLAT_FACTORY and g.tombstones == 0 and g.check().ok


def test_hnsw_parameters_persist(tmp_path: Path) -> None:
    names, vecs, centres = clustered(100, seed=3)
    with Gallery.create(tmp_path / "g", DIM, index="HNSW32,Flat") as g:
        g.add_many(names, vecs)
        assert g.info().search_params == {"efSearch": 256}
        g.set_search_params(efSearch=1024)
    with Gallery.open(tmp_path / "g") as g:
        assert g.info().search_params == {"efSearch": 1024}
        g.set_search_params(efSearch=None)
        assert g.info().search_params == {"efSearch": 256}


def test_explicit_factory_waits_for_enough_training_data(tmp_path: Path) -> None:
    names, vecs, _ = clustered(600, seed=6)
    with Gallery.create(tmp_path / "g", DIM, index="IVF16,SQ8") as g:
        g.add_many(names[:100], vecs[:100])
        assert g.factory == ix.FLAT_FACTORY  # exact until trainable
        g.add_many(names[100:], vecs[100:])
        assert len(names) >= ix.traits("IVF16,SQ8", DIM).min_train
        assert g.factory == "IVF16,SQ8" and g.info().index_spec == "IVF16,SQ8"
        assert g.check().ok


def test_input_validation(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="metric"):
        Gallery.create(tmp_path / "a", DIM, metric="l3")
    with pytest.raises(GalleryError, match="invalid FAISS factory"):
        Gallery.create(tmp_path / "b", DIM, index="NotAnIndex7")
    with pytest.raises(GalleryError, match="dim"):
        Gallery.create(tmp_path / "c", 0)
    with Gallery.create(tmp_path / "g", DIM, model="sface") as g:
        with pytest.raises(GalleryError, match="dimension 16.*32.*sface"):
            g.add("a", np.ones(16))
        with pytest.raises(GalleryError, match="NaN"):
            g.add("a", np.full(DIM, np.nan))
        with pytest.raises(GalleryError, match="all-zero"):
            g.add("a", np.zeros(DIM))
        with pytest.raises(GalleryError, match="non-empty"):
            g.add("", np.ones(DIM))
        with pytest.raises(GalleryError, match="JSON"):
            g.add("a", np.ones(DIM), metadata={"x": object()})
        assert len(g) == 0 and g.search(np.ones(DIM), k=3) == [[]]
        with pytest.raises(GalleryError, match="k must be"):
            g.search(np.ones(DIM), k=0)
        with pytest.raises(GalleryError, match="unknown search parameter"):
            g.set_search_params(foo=3)
    with pytest.raises(GalleryError, match="closed"):
        g.search(np.ones(DIM))


def test_gpu_plan_rules() -> None:
    assert not ix.gpu_plan("IDMap2,Flat", num_gpus=0, k=5).use
    assert ix.gpu_plan("IDMap2,Flat", num_gpus=1, k=5).use
    assert ix.gpu_plan("IVF4096,PQ64", num_gpus=2, k=2048, nprobe=2048).use
    assert not ix.gpu_plan("IVF4096,PQ64", num_gpus=1, k=2049).use
    assert not ix.gpu_plan("IVF4096,PQ64", num_gpus=1, k=10, nprobe=4096).use
    plan = ix.gpu_plan("IDMap,HNSW32,Flat", num_gpus=1, k=5)
    assert not plan.use and "HNSW" in plan.reason
    assert not ix.gpu_plan("IVF65536_HNSW32,SQ8", num_gpus=1, k=5).use
    assert not ix.gpu_plan(ix.ivf_factory(512), num_gpus=1, k=5).use
    assert not ix.gpu_plan("IDMap,PQ64x4fs", num_gpus=1, k=5).use


def test_traits_of_factories() -> None:
    assert ix.canonical_factory("Flat", DIM) == "IDMap2,Flat"
    assert ix.canonical_factory("HNSW32,SQ8", DIM) == "IDMap,HNSW32,SQ8"
    assert ix.canonical_factory("IVF64,PQ8", DIM) == "IVF64,PQ8"
    assert ix.traits("IDMap2,Flat", DIM).removable
    assert not ix.traits("IDMap,HNSW32,Flat", DIM).removable
    assert ix.traits("IVF64,PQ8", DIM).removable
    assert not ix.traits("IDMap,IVF64,Flat", DIM).removable
    assert ix.traits("IVF64,PQ8", DIM).min_train == 39 * 256
    assert ix.auto_factory(10, 512) == ix.FLAT_FACTORY
    assert ix.auto_factory(10**5, 512) == "IDMap,PQ128x4fs,RFlat"
    assert ix.auto_factory(10**6, 512) == "IDMap,PQ128x4fs,RFlat"
    assert ix.auto_factory(10**7, 128) == "IDMap,PQ32x4fs,RFlat"
    assert ix.default_search_params(ix.auto_factory(10**6, 128), 10**6, 128) == {"k_factor": 256}
    assert ix.default_search_params("IDMap,IVF1024,PQ32x4fs,RFlat", 10**6, 128) == {
        "nprobe": 512,
        "k_factor": 256,
    }
    assert (
        ix.scan_factory(12) == "IDMap,PQ3x4fs,RFlat" and ix.scan_factory(7) == "IDMap,PQ7x4fs,RFlat"
    )
    assert not ix.traits("IDMap,PQ16x4fs,RFlat", 128).removable
    assert ix.traits("IDMap,PQ16x4fs,RFlat", 128).params == ("k_factor",)
    assert ix.default_search_params("IDMap,PQ16x4fs,RFlat", 10**5, 128) == {"k_factor": 64}
    assert ix.default_search_params("IDMap,PQ16x4fs,RFlat", 10**6, 128) == {"k_factor": 256}
    assert ix.default_search_params("IDMap,PQ16x4fs,RFlat", 10**7, 128) == {"k_factor": 1024}


def test_trained_index_shrunk_below_training_size_falls_back_to_exact(tmp_path: Path) -> None:
    names, vecs, centres = clustered(600, seed=6)
    with Gallery.create(tmp_path / "g", DIM, index="IVF16,Flat", search_params={"nprobe": 16}) as g:
        tids = np.array(g.add_many(names, vecs))
        assert g.factory == "IVF16,Flat"
        gone = sorted(set(names))[:500]
        assert g.remove_many(gone) == sum(n in set(gone) for n in names)
    _damage(tmp_path / "g", "flip")
    alive = np.array([n not in set(gone) for n in names])
    assert alive.sum() < ix.traits("IVF16,Flat", DIM).min_train
    with Gallery.open(tmp_path / "g") as g:  # cannot retrain: exact search instead
        assert g.factory == ix.FLAT_FACTORY and g.check().ok
        q = queries_near(centres, 20)
        assert_same(g.search(q, k=3), brute_force(names, vecs, alive, q, 3), tids)
        assert g.template_counts() == {n: names.count(n) for n in sorted(set(names))[500:]}
