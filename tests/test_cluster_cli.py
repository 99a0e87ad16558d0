"""``npcface cluster`` end to end on a small folder of LFW photos: CSV, folders of links,
contact sheet, re-runs that add only new photos, --into a gallery, typed errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import lfw_image

from npcface.cli import main

PEOPLE = ("Colin_Powell", "Tony_Blair", "Gerhard_Schroeder")
LONE = ("AJ_Cook", "Aaron_Guiel")


@pytest.fixture
def photos(lfw_dir: Path, tmp_path: Path) -> Path:
    """4 photos each of 3 people and 1 each of 2 others, in one flat folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in PEOPLE:
        for i in range(1, 5):
            shutil.copy(lfw_image(lfw_dir, p, i), folder)
    for p in LONE:
        shutil.copy(lfw_image(lfw_dir, p, 1), folder)
    return folder


def person(photo: str) -> str:
    return re.sub(r"_\d{4}\.jpg$", "", Path(photo).name)


def centre_faces(csv_path: Path) -> dict[str, str]:
    """photo name -> group of its largest face (LFW photos are centred on the person)."""
    best: dict[str, tuple[float, str]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            area = (float(row["x2"]) - float(row["x1"])) * (float(row["y2"]) - float(row["y1"]))
            name = Path(row["photo"]).name
            if name not in best or area > best[name][0]:
                best[name] = (area, row["group"])
    return {k: v[1] for k, v in best.items()}


def test_cluster_a_folder(photos: Path, tmp_path: Path, capsys, lfw_dir: Path) -> None:
    out = tmp_path / "out"
    assert main(["cluster", str(photos), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "14 photos" in text and "3 groups" in text
    groups = centre_faces(out / "faces.csv")
    assert len(groups) == 14
    by_person = {p: {g for k, g in groups.items() if person(k) == p} for p in PEOPLE + LONE}
    for p in PEOPLE:
        assert len(by_person[p]) == 1 and by_person[p] != {""}  # one group per person
    assert len({next(iter(by_person[p])) for p in PEOPLE}) == 3  # three different groups
    for p in LONE:
        assert by_person[p] == {""}  # alone: in no group
    # the folders of links: each group's links point at one person's photos
    for g in {next(iter(by_person[p])) for p in PEOPLE}:
        links = list((out / "groups" / f"group_{int(g):05d}").iterdir())
        assert len(links) == 4 and all(link.is_symlink() for link in links)
        assert len({person(str(link.resolve())) for link in links}) == 1
    assert {person(str(p.resolve())) for p in (out / "groups" / "ungrouped").iterdir()} >= set(LONE)
    # the contact sheet: a row per group with its size, every thumbnail on disk
    page = (out / "index.html").read_text()
    assert len(re.findall(r'class="group" data-size="4"', page)) == 3
    for src in re.findall(r'src="(thumbs/\d+\.jpg)"', page):
        assert (out / src).stat().st_size > 500
    assert 'id="by-size-asc"' in page

    # again with one new photo of Tony Blair: only it is read, and it joins his group
    before = (out / "faces.csv").read_text()
    shutil.copy(lfw_image(lfw_dir, "Tony_Blair", 5), photos)
    assert (
        main(
            [
                "cluster",
                str(photos),
                "--out",
                str(out),
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["known"] == 14 and summary["new_faces"] >= 1
    after = centre_faces(out / "faces.csv")
    assert after["Tony_Blair_0005.jpg"] == groups["Tony_Blair_0001.jpg"]
    assert {k: after[k] for k in groups} == groups  # nothing else moved
    assert before != (out / "faces.csv").read_text()


def test_cluster_into_a_gallery_keeps_names(photos: Path, tmp_path: Path, capsys) -> None:
    from npcface import Gallery
    from npcface.cluster import FaceGroups

    gallery, out = tmp_path / "gallery", tmp_path / "out"
    args = [
        "cluster",
        str(photos),
        "--out",
        str(out),
        "--into",
        str(gallery),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (gallery / "groups.db").is_file() and not (out / "groups.db").exists()
    groups = centre_faces(out / "faces.csv")
    colin = int(groups["Colin_Powell_0001.jpg"])
    with Gallery.open(gallery) as g, FaceGroups.open(gallery) as fg:
        fg.name(colin, "Colin Powell", g)
        assert g.template_counts() == {"Colin Powell": 4}
    capsys.readouterr()
    assert main(args) == 0
    assert "0 new faces" in capsys.readouterr().out
    links = list((out / "groups" / f"Colin_Powell_{colin}").iterdir())
    assert {person(str(link.resolve())) for link in links} == {"Colin_Powell"}
    with open(out / "faces.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["name"] for r in rows if r["group"] == str(colin)} == {"Colin Powell"}


def test_cluster_errors(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cluster", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert main(["cluster", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    (empty / "a.jpg").write_bytes(b"not an image")
    assert main(["cluster", str(empty), "--out", str(afile)]) == 2
    assert "not a folder" in capsys.readouterr().err
