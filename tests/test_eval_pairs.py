"""Pair-list readers: the real LFW files and small hand-written files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from npcface.errors import NpcfaceError
from npcface.eval import Pair, PairsFormatError, read_lfw_pairs, read_pairs_csv


# --------------------------------------------------------------------------- real LFW
def test_read_lfw_pairs_view2(lfw_dir: Path) -> None:
    pairs = read_lfw_pairs(lfw_dir)
    assert len(pairs) == 6000
    assert Counter(p.fold for p in pairs) == {fold: 600 for fold in range(10)}
    assert sum(p.same for p in pairs) == 3000
    for fold in range(10):
        block = pairs[fold * 600 : (fold + 1) * 600]
        assert all(p.same for p in block[:300]) and not any(p.same for p in block[300:])
    paths = {p.path1 for p in pairs} | {p.path2 for p in pairs}
    assert len(paths) == 7701
    missing = [path for path in paths if not path.is_file()]
    assert not missing, missing[:5]
    first = pairs[0]  # "Abel_Pacheco 1 4"
    assert first.path1 == lfw_dir / "images" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    assert first.path2.name == "Abel_Pacheco_0004.jpg"


def test_read_lfw_pairs_view1(lfw_dir: Path) -> None:
    if not (lfw_dir / "pairsDevTrain.txt").is_file():
        pytest.skip("pairsDevTrain.txt not present")
    pairs = read_lfw_pairs(lfw_dir, "pairsDevTrain.txt")
    assert len(pairs) == 2200
    assert sum(p.same for p in pairs) == 1100
    assert {p.fold for p in pairs} == {0}


# ------------------------------------------------------------------ small LFW-like files
def _write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_lfw_pairs_two_folds(tmp_path: Path) -> None:
    _write(tmp_path, "2\t1\nAnn\t1\t12\nBob 3 Cy 1\nDee\t2\t3\nEd\t1\tFay\t101\n\n")
    pairs = read_lfw_pairs(tmp_path)
    images = tmp_path / "images"
    assert pairs == [
        Pair(images / "Ann/Ann_0001.jpg", images / "Ann/Ann_0012.jpg", True, 0),
        Pair(images / "Bob/Bob_0003.jpg", images / "Cy/Cy_0001.jpg", False, 0),
        Pair(images / "Dee/Dee_0002.jpg", images / "Dee/Dee_0003.jpg", True, 1),
        Pair(images / "Ed/Ed_0001.jpg", images / "Fay/Fay_0101.jpg", False, 1),
    ]


def test_read_lfw_pairs_single_number_header(tmp_path: Path) -> None:
    _write(tmp_path, "2\nA 1 2\nB 1 3\nA 1 B 2\nC 4 D 1\n", name="pairsDevTest.txt")
    pairs = read_lfw_pairs(tmp_path, "pairsDevTest.txt")
    assert [p.same for p in pairs] == [True, True, False, False]
    assert {p.fold for p in pairs} == {0}


def test_read_lfw_pairs_malformed_line(tmp_path: Path) -> None:
    # line 3 is a mismatched line where the second matched pair is expected
    path = _write(tmp_path, "1 2\nA 1 2\nA 1 B 2\nC 4 D 1\nE 1 F 1\n")
    with pytest.raises(PairsFormatError, match=r"pairs\.txt:3: expected a matched pair") as err:
        read_lfw_pairs(tmp_path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, NpcfaceError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 1\nA 1 2\n", "announces"),
        ("1 1\nA one 2\nA 1 B 2\n", r":2: image number must be an integer"),
        ("1 1 1\nA 1 2\nA 1 B 2\n", r":1: header"),
        ("", "empty"),
    ],
)
def test_read_lfw_pairs_errors(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(PairsFormatError, match=message):
        read_lfw_pairs(tmp_path)


def test_read_lfw_pairs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pairs.txt"):
        read_lfw_pairs(tmp_path)


# ------------------------------------------------------------------------------ CSV
def test_read_pairs_csv_with_header_and_folds(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "path1,path2,label,fold\n"
        "a/1.jpg,a/2.jpg,1,0\n"
        "# a comment\n"
        "\n"
        "a/1.jpg, b/1.jpg ,diff,1\n"
        '"c,d/1.jpg",/abs/x.jpg,Same,1\n',
        name="list.csv",
    )
    pairs = read_pairs_csv(path)
    assert pairs == [
        Pair(tmp_path / "a/1.jpg", tmp_path / "a/2.jpg", True, 0),
        Pair(tmp_path / "a/1.jpg", tmp_path / "b/1.jpg", False, 1),
        Pair(tmp_path / "c,d/1.jpg", Path("/abs/x.jpg"), True, 1),
    ]


def test_read_pairs_csv_without_header_custom_root(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.jpg,y.jpg,0\nx.jpg,z.jpg,same\n", name="list.csv")
    pairs = read_pairs_csv(path, root="/data/faces")
    assert [(p.path1, p.path2, p.same, p.fold) for p in pairs] == [
        (Path("/data/faces/x.jpg"), Path("/data/faces/y.jpg"), False, 0),
        (Path("/data/faces/x.jpg"), Path("/data/faces/z.jpg"), True, 0),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,1\na,c,maybe\n", r"list\.csv:2: label must be"),
        ("a,b,2\n", r"list\.csv:1: label must be"),
        ("a,b\n", r"list\.csv:1: expected"),
        ("a,b,1,0\na,c,0\n", r"list\.csv:2: the fold column"),
        ("a,b,1,-1\n", r"list\.csv:1: fold must be"),
    ],
)
def test_read_pairs_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, name="list.csv")
    with pytest.raises(PairsFormatError, match=message):
        read_pairs_csv(path)
