"""FaceGroups: corrections (merge, split, move, not this person, name into a gallery) survive
closing, reopening, a full recluster and incremental updates; typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npcface import Gallery
from npcface.cluster import FaceGroups
from npcface.errors import (
    EmbeddingError,
    GroupNotFoundError,
    InvalidArgumentError,
    NpcfaceError,
)

MODEL = "sface-int8"
DIM = 128


def faces_of(centres: np.ndarray, person: np.ndarray, seed: int) -> np.ndarray:
    """Unit vectors near each person's centre (cosine to it about 0.88)."""
    rng = np.random.default_rng(seed)
    x = centres[person] + 0.55 * rng.standard_normal((len(person), DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def centres() -> np.ndarray:
    c = np.random.default_rng(0).standard_normal((6, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def group_of(fg: FaceGroups, face: int) -> int | None:
    return fg.face(face).group


def test_corrections_stick_across_reopen_recluster_and_update(
    tmp_path: Path, centres: np.ndarray
) -> None:
    person = np.repeat(np.arange(4), 6)
    # and one face of someone else who looks like person 3 (cosine to 3's faces ~0.6)
    lookalike = 0.8 * centres[3] + 0.6 * centres[4]
    lookalike = faces_of(lookalike[None] / np.linalg.norm(lookalike), np.zeros(1, np.int64), 9)
    with FaceGroups.open(tmp_path, dim=DIM, model=MODEL) as fg:
        ids = fg.add(
            faces_of(centres, person, 1),
            sources=[f"p{p}/{i}.jpg" for i, p in enumerate(person)],
            keys=[f"k{i}" for i in range(len(person))],
        )
        assert fg.add(faces_of(centres, person[:2], 1), keys=["k0", "k1"]) == ids[:2]
        assert len(fg) == 24
        fg.recluster()
        by_person = {
            p: {group_of(fg, ids[i]) for i in np.flatnonzero(person == p)} for p in range(4)
        }
        assert all(len(g) == 1 for g in by_person.values())  # each person one group
        g0, g1, g2, g3 = (next(iter(by_person[p])) for p in range(4))
        assert len({g0, g1, g2, g3}) == 4
        (stranger,) = fg.add(lookalike)
        fg.update()
        assert group_of(fg, stranger) == g3  # the mistake to correct

        # the corrections: 0 and 1 are one person (say, by the user); split 2 in two;
        # the look-alike is not person 3; a face of 0 belongs with 3
        assert fg.merge(g0, g1) == g0
        p2 = [ids[i] for i in np.flatnonzero(person == 2)]
        g2b = fg.split(g2, p2[:3])
        p3 = [ids[i] for i in np.flatnonzero(person == 3)]
        fg.not_person(stranger, g3)
        assert group_of(fg, stranger) is None
        moved = ids[0]
        fg.move(moved, g3)
        assert [c["action"] for c in fg.corrections()] == ["merge", "split", "not_person", "move"]

    def check(fg: FaceGroups) -> None:
        for i in np.flatnonzero(person <= 1):
            if ids[i] != moved:
                assert group_of(fg, ids[i]) == g0
        assert {group_of(fg, f) for f in p2[:3]} == {g2b}
        assert {group_of(fg, f) for f in p2[3:]} == {g2}
        assert group_of(fg, stranger) != g3
        assert {group_of(fg, f) for f in p3} == {g3}
        assert group_of(fg, moved) == g3

    with FaceGroups.open(tmp_path) as fg:  # another process, later
        check(fg)
        fg.recluster()
        check(fg)
        # new faces: two more of each person and a stranger
        new_person = np.array([0, 0, 1, 1, 2, 2, 3, 3, 5])
        new = fg.add(faces_of(centres, new_person, 2))
        fg.update()
        check(fg)
        # (0 and 1 are two random people merged by hand: their new faces, each near one
        # half of the group, need not join it, but never join another person's group)
        assert {group_of(fg, f) for f in new[:4]}.isdisjoint({g2, g2b, g3})
        assert {group_of(fg, f) for f in new[4:6]} <= {g2, g2b}
        assert {group_of(fg, f) for f in new[6:8]} == {g3}
        assert group_of(fg, new[8]) is None  # a stranger alone is noise
        fg.recluster()
        check(fg)
        sizes = {g.id: g.size for g in fg.groups()}
        assert sizes[g3] == 6 + 1 + 2 and sizes[g2] + sizes[g2b] == 6 + 2
        assert all(g.confirmed for g in fg.groups() if g.id in (g0, g2, g2b, g3))


def test_name_enrols_into_a_gallery_exactly_once(tmp_path: Path, centres: np.ndarray) -> None:
    person = np.repeat(np.arange(2), 5)
    with (
        Gallery.create(tmp_path / "g", dim=DIM, model=MODEL) as gallery,
        FaceGroups.open(tmp_path / "g", dim=DIM, model=MODEL) as fg,
    ):
        ids = fg.add(faces_of(centres, person, 3))
        fg.recluster()
        g = group_of(fg, ids[0])
        first = fg.name(g, "alice", gallery)
        assert len(first) == 5 and gallery.template_counts() == {"alice": 5}
        assert fg.name(g, "alice", gallery) == first  # again: nothing new
        assert fg.group(g).name == "alice" and fg.group(g).confirmed
        more = fg.add(faces_of(centres, np.zeros(2, np.int64), 4))
        fg.update()
        assert {group_of(fg, f) for f in more} == {g}
        assert len(fg.name(g, "alice", gallery)) == 7
        assert gallery.template_counts() == {"alice": 7}
        other = group_of(fg, ids[5])
        with pytest.raises(InvalidArgumentError, match="named 'alice' already"):
            fg.name(other, "alice")
    assert FaceGroups.exists(tmp_path / "g")


def test_bad_input_is_a_typed_error(tmp_path: Path, centres: np.ndarray) -> None:
    with pytest.raises(InvalidArgumentError, match="dim"):
        FaceGroups.open(tmp_path)  # a new collection needs its dimension
    with pytest.raises(InvalidArgumentError):
        FaceGroups.open(tmp_path / "missing", dim=DIM)
    fg = FaceGroups.open(tmp_path, dim=DIM, model=MODEL)
    with pytest.raises(InvalidArgumentError):
        FaceGroups.open(tmp_path, dim=64)
    with pytest.raises(InvalidArgumentError, match="not comparable"):
        FaceGroups.open(tmp_path, model="sface")
    with pytest.raises(EmbeddingError):
        fg.add(np.ones((2, 64), np.float32))
    with pytest.raises(InvalidArgumentError):
        fg.add(np.ones((2, DIM), np.float32), sources=["one"])
    ids = fg.add(faces_of(centres, np.repeat(np.arange(2), 3), 5))
    fg.recluster()
    g = group_of(fg, ids[0])
    assert g is not None
    for call in (
        lambda: fg.group(10_000),
        lambda: fg.face(10_000),
        lambda: fg.merge(g, 10_000),
        lambda: fg.move(10_000, g),
        lambda: fg.not_person(ids[0], 10_000),
    ):
        with pytest.raises(GroupNotFoundError):
            call()
    for call in (
        lambda: fg.merge(g, g),
        lambda: fg.split(g, ids[:3]),  # all of it
        lambda: fg.split(g, [ids[4]]),  # not of it
        lambda: fg.name(g, "  "),
        lambda: fg.group("x"),
        lambda: fg.face(True),
    ):
        with pytest.raises(InvalidArgumentError):
            call()
    assert GroupNotFoundError.status == 404
    fg.close()
    with pytest.raises(NpcfaceError, match="closed"):
        fg.groups()


def test_report_never_deletes_what_it_did_not_write(tmp_path: Path, centres: np.ndarray) -> None:
    from npcface.cluster.report import write_report

    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x")
    with FaceGroups.open(tmp_path, dim=DIM, model=MODEL) as fg:
        fg.add(faces_of(centres, np.repeat(np.arange(2), 3), 6), sources=[str(photo)] * 6)
        fg.recluster()
        report = write_report(fg, tmp_path / "out")
        assert report.groups == 2 and report.faces == 6 and report.ungrouped == 0
        assert len(list(report.folders.rglob("*.jpg"))) == 6  # links to the photo
        mine = report.folders / "notes.txt"
        mine.write_text("kept")
        with pytest.raises(InvalidArgumentError, match="not written by npcface"):
            write_report(fg, tmp_path / "out")
        assert mine.read_text() == "kept"
