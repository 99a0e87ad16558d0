"""The pose benchmark: built from identity folders as documented; accuracy by yaw bin checked
by hand; ``npcface eval pairs`` runs on it."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from npcface.cli import main
from npcface.eval import Pair, read_pairs_csv
from npcface.eval.pose import accuracy_by_yaw, build_pose_pairs, read_yaws

PEOPLE = ("Tony_Blair", "Colin_Powell", "Donald_Rumsfeld", "Gerhard_Schroeder")


@pytest.fixture(scope="module")
def bench(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("people")
    for name in PEOPLE:
        (root / name).mkdir()
        for n in range(1, 5):
            src = lfw_dir / "images" / name / f"{name}_{n:04d}.jpg"
            os.symlink(src, root / name / src.name)
    out = root.parent / (root.name + "_pose")
    info = build_pose_pairs(root, out, per_identity=2, folds=2, progress=False)
    return root, info


def test_pairs_follow_the_documented_rule(bench):
    root, info = bench
    assert (info.identities, info.genuine, info.impostor) == (4, 8, 8)
    yaws = read_yaws(info.yaw_csv, root=root)
    pairs = read_pairs_csv(info.pairs_csv, root=root)
    by_person: dict[str, list[Path]] = {}
    for p in yaws:
        by_person.setdefault(p.parent.name, []).append(p)
    for p in pairs:
        person = p.path1.parent.name
        # path1 is the person's most frontal photo
        assert abs(yaws[p.path1]) == min(abs(yaws[q]) for q in by_person[person])
        assert (p.path2.parent.name == person) == p.same
        assert p.fold == PEOPLE_SORTED.index(person) % 2
    for person, photos in by_person.items():
        turned = sorted(photos, key=lambda q: -abs(yaws[q]))[:2]
        genuine = {p.path2 for p in pairs if p.same and p.path1.parent.name == person}
        assert genuine == set(turned)  # the two most turned photos
    turned_all = [x.path2 for x in pairs if x.same]
    used: set[tuple[Path, Path]] = set()
    for p, q in zip(pairs[::2], pairs[1::2], strict=True):
        assert p.same and not q.same and p.path1 == q.path1  # each genuine, then its impostor
        # the impostor's photo: another person's turned photo of nearest |yaw|, not yet
        # paired with this frontal photo
        others = [t for t in turned_all if t.parent != p.path1.parent and (p.path1, t) not in used]
        gap = [abs(abs(yaws[t]) - abs(yaws[p.path2])) for t in others]
        assert abs(abs(yaws[q.path2]) - abs(yaws[p.path2])) <= min(gap) + 0.011  # yaw.csv: 2 dp
        used.add((p.path1, q.path2))


PEOPLE_SORTED = sorted(PEOPLE)


def test_accuracy_by_yaw_by_hand():
    a, b = Path("a"), Path("b")
    pairs = [
        Pair(a, Path("t1"), True, 0),  # yaw 10: score 0.5 >= 0.3 -> right
        Pair(a, Path("t2"), False, 0),  # yaw 12: 0.4 >= 0.3 -> wrong
        Pair(b, Path("t3"), True, 1),  # yaw 40: 0.2 < 0.25 -> wrong
        Pair(b, Path("t4"), False, 1),  # yaw -50: 0.1 -> right
    ]
    yaws = {a: 1.0, b: -2.0, Path("t1"): 10.0, Path("t2"): 12.0, Path("t3"): 40.0}
    yaws[Path("t4")] = -50.0
    rows = accuracy_by_yaw(pairs, np.array([0.5, 0.4, 0.2, 0.1]), {0: 0.3, 1: 0.25}, yaws)
    assert rows == [
        {"bin": "0-15", "pairs": 2, "genuine": 1, "accuracy": 0.5},
        {"bin": "30-45", "pairs": 1, "genuine": 1, "accuracy": 0.0},
        {"bin": "45-60", "pairs": 1, "genuine": 0, "accuracy": 1.0},
    ]


def test_eval_pairs_cli_reports_by_yaw(bench, capsys, tmp_path):
    root, info = bench
    plot = tmp_path / "yaw.png"
    args = ["eval", "pairs", str(info.pairs_csv), "--root", str(root), "--yaw"]
    args += [str(info.yaw_csv), "--preset", "fast", "--json", "--no-progress", "--plot", str(plot)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 16 and report["preset"] == "fast"
    assert sum(r["pairs"] for r in report["by_yaw"]) == 16
    assert plot.stat().st_size > 1000
    with open(info.pairs_csv, encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["path1", "path2", "label", "fold"]
