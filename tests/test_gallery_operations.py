"""Galleries under real operations: what is removed is gone from every file, a reader
notices that its gallery was deleted or replaced, names are one Unicode form, and writes
can be made exactly once."""

from __future__ import annotations

import shutil
import sqlite3
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from npcface import Gallery
from npcface.errors import (
    GalleryArgumentError,
    GalleryBusyError,
    GalleryClosedError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    IdentityNotFoundError,
)

DIM = 64


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def as_stored(x: np.ndarray, dtype: str = "float32") -> list[bytes]:
    """The first 64 bytes of each row as a cosine gallery stores it (normalised once more,
    in float32, then in the storage type): long enough never to match by accident."""
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    return [row.tobytes()[:64] for row in y.astype(dtype)]


def files_bytes(directory: Path) -> dict[str, bytes]:
    """Every file of a gallery directory, raw."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def holds(blobs: dict[str, bytes], needle: bytes) -> list[str]:
    return [name for name, data in blobs.items() if needle in data]


# ------------------------------------------------------------------ erasure
@pytest.mark.parametrize(
    ("index", "dtype"),
    [
        ("auto", "float32"),
        ("auto", "float16"),
        ("HNSW16,Flat", "float32"),
        ("PQ8x4fs,RFlat", "float32"),
    ],
)
def test_removed_templates_are_gone_from_every_file(tmp_path: Path, index: str, dtype: str):
    """After an acknowledged removal no file of the gallery holds the removed vectors, the
    identity's name or its metadata: not the database, not its write-ahead log, not the
    index file. A reader in another handle is open throughout (it pins old snapshots)."""
    path = tmp_path / "g"
    others = unit_rows(300, 1)
    secret = unit_rows(4, 2)
    name, badge = "Erin Erasable-7731", "BADGE-SECRET-99120"
    with Gallery.create(path, DIM, index=index, dtype=dtype) as g:
        for i in range(0, 300, 3):
            g.add(f"person{i}", others[i : i + 3])
        ids = g.add(name, secret, metadata={"badge": badge})
        g.add("kept", others[:1], metadata={"badge": "BADGE-KEPT-1"})
        reader = Gallery.open(path, readonly=True)
        assert reader.search(secret[0], k=1)[0][0].identity == name
        rows = as_stored(secret, dtype)
        before = files_bytes(path)
        assert all(holds(before, r) for r in rows), "the scan must see the vectors first"
        assert holds(before, badge.encode()) and holds(before, name.encode())

        # deleted content is zeroed in place whatever the SQLite build's default (Debian's
        # turns it on at compile time, others do not): the writer asks for it
        assert g._backend.store._conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert g.remove(name) == len(ids)

        after = files_bytes(path)
        for r in rows:
            assert not holds(after, r), f"a removed vector is still in {holds(after, r)}"
        assert not holds(after, badge.encode()), holds(after, badge.encode())
        assert not holds(after, name.encode()), holds(after, name.encode())
        assert holds(after, b"BADGE-KEPT-1")  # the rest is untouched
        assert g.search(secret[0], k=3)[0][0].identity != name
        assert all(m.identity != name for m in reader.search(secret, k=5)[0])
        assert g.check().ok and g.tombstones == 0
        reader.close()
    with Gallery.open(path) as g:  # and it stays so after a reopen
        assert name not in g and len(g) == 101


def test_removed_templates_by_id_are_gone_from_every_file(tmp_path: Path):
    path = tmp_path / "g"
    vecs = unit_rows(6, 3)
    with Gallery.create(path, DIM) as g:
        ids = g.add("ann", vecs)
        g.remove_templates(ids[:2])
        blobs = files_bytes(path)
        rows = as_stored(vecs)
        assert not any(holds(blobs, r) for r in rows[:2])
        assert all(holds(blobs, r) for r in rows[2:])
        assert g.templates("ann") == ids[2:]


# ------------------------------------------------------------------ deleted or replaced
def test_reader_notices_its_gallery_deleted_and_replaced(tmp_path: Path):
    path = tmp_path / "g"
    old = unit_rows(2, 4)
    with Gallery.create(path, DIM) as g:
        g.add("old", old)
    reader = Gallery.open(path, readonly=True)
    assert reader.search(old[0], k=1)[0][0].identity == "old"
    shutil.rmtree(path)
    with pytest.raises(GalleryNotFoundError, match="deleted or replaced"):
        reader.search(old[0], k=1)
    new = unit_rows(2, 5)
    with Gallery.create(path, DIM) as g:  # the same path, another gallery
        g.add("new", new)
    with pytest.raises(GalleryNotFoundError):  # never answers from the deleted one
        reader.search(old[0], k=1)
    with pytest.raises(GalleryNotFoundError):
        len(reader)
    reader.close()
    with Gallery.open(path, readonly=True) as fresh:
        assert fresh.identities() == ["new"]


def test_typed_errors_of_gallery_operations(tmp_path: Path):
    path = tmp_path / "g"
    with pytest.raises(GalleryNotFoundError):
        Gallery.open(path)
    g = Gallery.create(path, DIM)
    with pytest.raises(GalleryExistsError):
        Gallery.create(path, DIM)
    with pytest.raises(GalleryBusyError):
        Gallery.open(path)
    with pytest.raises(IdentityNotFoundError):
        g.remove("nobody")
    g.close()
    with pytest.raises(GalleryClosedError):
        len(g)
    for cls in (GalleryNotFoundError, GalleryExistsError, GalleryBusyError, IdentityNotFoundError):
        assert issubclass(cls, GalleryError)


# ------------------------------------------------------------------ names
def test_identity_names_are_one_unicode_form(tmp_path: Path):
    nfd, nfc = "Zoe\u0308 Martin", "Zo\u00eb Martin"
    assert unicodedata.normalize("NFC", nfd) == nfc and nfd != nfc
    v = unit_rows(3, 6)
    with Gallery.create(tmp_path / "g", DIM) as g:
        g.add(nfd, v[:1])  # a folder name as macOS writes it
        g.add(nfc, v[1:2])  # the same name typed elsewhere
        assert g.identities() == [nfc] and g.template_counts() == {nfc: 2}
        assert nfd in g and nfc in g
        assert g.search(v[0], k=1)[0][0].identity == nfc
        assert len(g.templates(nfd)) == 2
        assert g.remove(nfd) == 2 and nfc not in g


@pytest.mark.parametrize("bad", ["line\nbreak", "tab\there", "nul\x00", "   ", ""])
def test_names_with_control_characters_are_refused(tmp_path: Path, bad: str):
    with Gallery.create(tmp_path / "g", DIM) as g:
        with pytest.raises(GalleryArgumentError):
            g.add(bad, unit_rows(1, 7))
        assert bad not in g and len(g) == 0


def test_opening_for_writing_migrates_old_names(tmp_path: Path):
    """A gallery written before names were normalised: two spellings of one person (and one
    NFD name alone) become one NFC identity each, templates and metadata kept."""
    path = tmp_path / "g"
    v = unit_rows(4, 8)
    nfd, nfc, lone_nfd = "Jose\u0301", "Jos\u00e9", "Rene\u0301e"
    with Gallery.create(path, DIM) as g:
        g.add("A", v[:1])
        g.add("B", v[1:2], metadata={"k": "b", "only_b": 1})
        g.add("C", v[2:3], metadata={"k": "c"})
        g.add("D", v[3:4])
    db = sqlite3.connect(path / "gallery.db")  # as an older npcface stored them
    with db:
        db.execute("UPDATE identities SET name = ? WHERE name = 'B'", (nfd,))
        db.execute("UPDATE identities SET name = ? WHERE name = 'C'", (nfc,))
        db.execute("UPDATE identities SET name = ? WHERE name = 'D'", (lone_nfd,))
        db.execute("DELETE FROM meta WHERE key = 'names'")
    db.close()
    with Gallery.open(path, readonly=True) as r:  # a reader migrates nothing
        assert sorted(r.identities()) == sorted(["A", nfd, nfc, lone_nfd])
    with Gallery.open(path) as g:
        assert sorted(g.identities()) == sorted(["A", nfc, unicodedata.normalize("NFC", lone_nfd)])
        assert g.template_counts()[nfc] == 2
        assert g.metadata(nfc) == {"k": "c", "only_b": 1}  # the NFC identity's values win
        assert g.search(v[1], k=1)[0][0].identity == nfc
        assert g.check().ok
    with Gallery.open(path, readonly=True) as r:
        assert r.search(v[1], k=1)[0][0].identity == nfc


# ------------------------------------------------------------------ exactly once
def test_add_once_skips_known_content_and_replays_a_request(tmp_path: Path):
    v = unit_rows(5, 9)
    hashes = [f"h{i}" for i in range(5)]
    with Gallery.create(tmp_path / "g", DIM) as g:
        first = g.add_once("ann", v[:3], content_hashes=hashes[:3], request_key="k1")
        assert first.added == (True, True, True) and not first.replayed
        assert list(first.template_ids) == g.templates("ann")
        # a retry of the same request: the same answer, nothing written
        again = g.add_once("ann", v[:3], content_hashes=hashes[:3], request_key="k1")
        assert again.template_ids == first.template_ids and again.replayed
        assert again.added == first.added
        # a new request that overlaps: only the new content is stored
        more = g.add_once("ann", v[1:5], content_hashes=hashes[1:5], request_key="k2")
        assert more.added == (False, False, True, True)
        assert more.template_ids[:2] == first.template_ids[1:]
        assert len(g.templates("ann")) == 5
        # one key, another request: refused, nothing written
        with pytest.raises(GalleryArgumentError, match="used before"):
            g.add_once("bob", v[:1], content_hashes=hashes[:1], request_key="k1")
        assert "bob" not in g
        # the same content twice in one call is stored once
        dup = g.add_once("cy", np.stack([v[0], v[0]]))
        assert dup.added == (True, False) and dup.template_ids[0] == dup.template_ids[1]
        # content known to another identity is that identity's business, not this one's
        other = g.add_once("dee", v[:1], content_hashes=hashes[:1])
        assert other.added == (True,)
        # a late retry after the identity was removed does not bring it back
        g.remove("ann")
        late = g.add_once("ann", v[:3], content_hashes=hashes[:3], request_key="k1")
        assert late.replayed and late.template_ids == first.template_ids and "ann" not in g
        # the record keeps no name and no vector (erasure): key, a hash, template ids
        rows = g._backend.store._conn.execute("SELECT * FROM requests").fetchall()
        assert rows and not any("ann" in repr(r) for r in rows)
        fresh = g.add_once("ann", v[:3], content_hashes=hashes[:3], request_key="k3")
        assert fresh.added == (True, True, True) and not fresh.replayed
        assert g.check().ok


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_handles_hold_no_descriptor_of_the_database_but_sqlites(tmp_path: Path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's too; another process may then checkpoint and delete a write-ahead log still in
    use (a soak run lost acknowledged writes so). So nothing but SQLite opens gallery.db."""
    import os

    def db_descriptors() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            n += target == str((tmp_path / "g" / "gallery.db").resolve())
        return n

    with Gallery.create(tmp_path / "g", DIM) as g:
        g.add("a", unit_rows(1, 10))
        assert db_descriptors() == 1
        readers = [Gallery.open(tmp_path / "g", readonly=True) for _ in range(3)]
        assert all(r.identities() == ["a"] for r in readers)
        assert db_descriptors() == 4  # one SQLite connection each, nothing more
        for r in readers:
            r.close()  # SQLite keeps their descriptors until its last connection closes
    assert db_descriptors() == 0
