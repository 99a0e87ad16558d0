"""The hard-pairs suite: built from real identity folders by its documented rules; TAR over all
impostor pairs against a brute-force count; ``npcface eval make-hard`` and ``eval pairs
--suite`` end to end."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from npcface.cli import main
from npcface.errors import InvalidArgumentError
from npcface.eval import Pair, read_pairs_csv
from npcface.eval.hard import (
    AGE_GROUP,
    SuitePhoto,
    all_impostor_scores,
    build_hard_pairs,
    pair_groups,
    read_suite,
    suite_report,
)


@pytest.fixture(scope="module")
def small(data_dir, tmp_path_factory):
    """6 CelebA identities and 6 LAG identities (the first with young_ photos), linked."""
    root = tmp_path_factory.mktemp("hard_data")
    for part, names in (
        ("celeba-subset", sorted(os.listdir(data_dir / "celeba-subset"))[:6]),
        ("lag", [n for n in sorted(os.listdir(data_dir / "lag")) if _has_young(data_dir, n)][:6]),
    ):
        for name in names:
            (root / part / name).mkdir(parents=True)
            for f in sorted((data_dir / part / name).iterdir()):
                os.symlink(f, root / part / name / f.name)
    out = root.parent / (root.name + "_suite")
    return root, build_hard_pairs(root, out, folds=2, progress=False)


def _has_young(data_dir: Path, name: str) -> bool:
    files = os.listdir(data_dir / "lag" / name)
    return any(f.startswith("young_") for f in files) and not all(
        f.startswith("young_") for f in files
    )


def test_suite_follows_the_documented_rules(small):
    root, info = small
    photos = read_suite(info.photos_csv, root=root)
    pairs = read_pairs_csv(info.pairs_csv, root=root)
    by = {s.path: s for s in photos}
    for s in photos:
        if s.part == "pose":
            assert (s.role == "frontal") == (abs(s.yaw) < 10.0 + 0.005)
            assert s.role == "frontal" or abs(s.yaw) >= 20.0 - 0.005
        else:
            assert (s.role == "young") == s.path.name.startswith("young_")
    # genuine: exactly every (frontal, turned) and (adult, young) pair of one identity
    want = {
        (a.path, b.path)
        for a, b in itertools.product(photos, photos)
        if a.identity == b.identity
        and a.part == b.part
        and (a.role, b.role) in {("frontal", "turned"), ("adult", "young")}
    }
    assert {(p.path1, p.path2) for p in pairs if p.same} == want
    assert info.genuine == {
        part: sum(1 for a, _ in want if by[a].part == part) for part in ("pose", "age")
    }
    # each genuine pair is followed by its impostor: same first photo, a photo of the same role
    # of another identity of the same fold, never twice; none only when no such photo is left
    used: set = set()
    for k, g in enumerate(pairs):
        if not g.same:
            continue
        a, b = by[g.path1], by[g.path2]
        imp = pairs[k + 1] if k + 1 < len(pairs) else g
        if imp.same:
            left = [
                s
                for s in photos
                if (s.role, s.fold) == (b.role, a.fold)
                and s.identity != a.identity
                and (g.path1, s.path) not in used
            ]
            assert not left
            continue
        b2 = by[imp.path2]
        assert imp.path1 == g.path1 and b2.identity != a.identity
        assert (b2.role, b2.part, b2.fold) == (b.role, b.part, a.fold) == (b.role, a.part, g.fold)
        used.add((imp.path1, imp.path2))
    assert len({(p.path1, p.path2) for p in pairs}) == len(pairs)
    # folds: identities of a part sorted, round robin
    for part in ("pose", "age"):
        ids = sorted({s.identity for s in photos if s.part == part})
        assert all(s.fold == ids.index(s.identity) % 2 for s in photos if s.part == part)
    assert info.identities["pose"] >= 2 and info.identities["age"] >= 2


def test_pose_impostor_is_the_nearest_unused_yaw(small):
    root, info = small
    photos = read_suite(info.photos_csv, root=root)
    pairs = read_pairs_csv(info.pairs_csv, root=root)
    by = {s.path: s for s in photos}
    used: set = set()
    for g, imp in zip(pairs, pairs[1:], strict=False):
        a = by[g.path1]
        if a.part != "pose" or not g.same or imp.same:
            continue
        pool = [
            s
            for s in photos
            if s.role == "turned"
            and s.fold == a.fold
            and s.identity != a.identity
            and (g.path1, s.path) not in used
        ]
        gap = min(abs(abs(s.yaw) - abs(by[g.path2].yaw)) for s in pool)
        assert abs(abs(by[imp.path2].yaw) - abs(by[g.path2].yaw)) <= gap + 0.011  # 2 dp
        used.add((g.path1, imp.path2))


def _toy():
    """Two parts, three identities each; embeddings in 3-D, hand-placed."""
    P = Path
    photos = [
        SuitePhoto(P("f1"), "1", "pose", "frontal", 0, 1.0, 0, 0),
        SuitePhoto(P("t1"), "1", "pose", "turned", 0, 25.0, 0, 0),
        SuitePhoto(P("f2"), "2", "pose", "frontal", 1, -3.0, 0, 0),
        SuitePhoto(P("t2"), "2", "pose", "turned", 1, -50.0, 0, 0),
        SuitePhoto(P("t3"), "3", "pose", "turned", 0, 33.0, 0, 0),
        SuitePhoto(P("a1"), "x", "age", "adult", 0, 0, 0, 0),
        SuitePhoto(P("y1"), "x", "age", "young", 0, 0, 0, 0),
        SuitePhoto(P("y2"), "z", "age", "young", 1, 0, 0, 0),
    ]
    rng = np.random.default_rng(3)
    emb = {s.path: v / np.linalg.norm(v) for s in photos for v in [rng.normal(size=3)]}
    return photos, emb


def test_all_impostor_scores_against_brute_force():
    photos, emb = _toy()
    del emb[Path("t3")]  # no face in the pipeline under test: scores -1 with everyone
    got = np.sort(all_impostor_scores(photos, emb))
    want = []
    for a in photos:
        for b in photos:
            pair_roles = (a.role, b.role) in {("frontal", "turned"), ("adult", "young")}
            if pair_roles and a.identity != b.identity:
                ok = a.path in emb and b.path in emb
                want.append(float(emb[a.path] @ emb[b.path]) if ok else -1.0)
    # f1-t2, f1-t3, f2-t1, f2-t3, a1-y2
    assert len(want) == 5
    np.testing.assert_allclose(got, np.sort(want), atol=1e-6)


def test_suite_report_tar_and_groups_by_hand():
    photos, emb = _toy()
    pairs = [
        Pair(Path("f1"), Path("t1"), True, 0),
        Pair(Path("f1"), Path("t3"), False, 0),
        Pair(Path("f2"), Path("t2"), True, 1),
        Pair(Path("a1"), Path("y1"), True, 0),
        Pair(Path("a1"), Path("y2"), False, 1),
    ]
    scores = np.array([float(emb[p.path1] @ emb[p.path2]) for p in pairs])
    rep = suite_report(pairs, scores, photos, emb, fars=(0.2, 1e-4))
    imp = np.sort(all_impostor_scores(photos, emb))
    assert rep["impostors_all"] == len(imp) == 5
    genuine = scores[[0, 2, 3]]
    # FAR 0.2 of 5 impostors: one may be accepted, so the threshold is just above the 2nd
    # highest; FAR 1e-4: none, just above the highest
    for far, k in ((0.2, 2), (1e-4, 1)):
        thr = np.nextafter(np.float32(imp[-k]), np.float32(np.inf))
        r = rep["tar_at_far_all"][str(far)]
        assert r["threshold"] == pytest.approx(float(thr))
        assert r["tar"] == pytest.approx(float(np.mean(genuine >= thr)))
        fold_tars = [float(np.mean(genuine[[0, 2]] >= thr)), float(genuine[1] >= thr)]
        assert r["per_fold"] == pytest.approx([fold_tars[0], fold_tars[1]])
        assert r["fold_std"] == pytest.approx(float(np.std(fold_tars)))
    assert pair_groups(pairs, photos) == [
        "yaw 20-30",
        "yaw 30-45",
        "yaw 45-90",
        AGE_GROUP,
        AGE_GROUP,
    ]
    assert [g["bin"] for g in rep["by_group"]] == ["yaw 20-30", "yaw 30-45", "yaw 45-90", AGE_GROUP]
    assert [g["pairs"] for g in rep["by_group"]] == [1, 1, 1, 2]


def test_bad_suite_rows_are_typed_errors(tmp_path):
    bad = tmp_path / "photos.csv"
    bad.write_text("path,identity,part,role,fold,yaw,pitch,roll\na.jpg,1,pose,young,0,1,2,3\n")
    with pytest.raises(InvalidArgumentError, match="role 'young' of part 'pose'"):
        read_suite(bad)
    bad.write_text("path,identity\na.jpg,1\n")
    with pytest.raises(InvalidArgumentError, match="photos.csv:2"):
        read_suite(bad)
    with pytest.raises(InvalidArgumentError, match="at least one"):
        build_hard_pairs(tmp_path, tmp_path / "o", pose=None, age=None)


def test_make_hard_and_eval_pairs_suite_cli(small, capsys, tmp_path):
    root, info = small
    out = tmp_path / "suite"
    assert main(["eval", "make-hard", str(root), "--out", str(out), "--folds", "2"]) == 0
    capsys.readouterr()
    for name in ("pairs.csv", "photos.csv", "yaw.csv"):  # deterministic
        assert (out / name).read_bytes() == (info.pairs_csv.parent / name).read_bytes()
    plot = tmp_path / "groups.png"
    args = ["eval", "pairs", str(info.pairs_csv), "--root", str(root), "--suite"]
    args += [str(info.photos_csv), "--preset", "fast", "--json", "--no-progress"]
    assert main([*args, "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    suite = report["suite"]
    pairs = read_pairs_csv(info.pairs_csv, root=root)
    assert report["pairs"] == len(pairs)
    assert sum(g["pairs"] for g in suite["by_group"]) == len(pairs)
    assert set(suite["tar_at_far_all"]) == {"0.001", "0.0001"}
    assert suite["impostors_all"] > report["num_impostor"]
    assert len(suite["tar_at_far_all"]["0.001"]["per_fold"]) == 2
    assert plot.stat().st_size > 1000
