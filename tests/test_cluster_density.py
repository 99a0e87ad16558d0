"""npcface.cluster.density: local sizes and bars against a hand computation on a toy
calibration whose tails are straight lines, and the density rule on a small constructed
collection where it decides the groups (and where switching it off changes them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import npcface.cluster.density as dn
from npcface.cluster import NOISE, Clusterer, Constraints, cluster_embeddings
from npcface.cluster.density import (
    BACKGROUND_RANK,
    MIN_STRANGERS,
    STRANGERS_PER_FACE,
    TYPICAL_SPREAD,
    LocalRule,
    first_log_sizes,
    local_log_sizes,
)
from npcface.cluster.thresholds import MIN_COLLECTION, ClusterCalibration

# Straight tails: pair threshold = 0.1 - 0.1 log10(FAR), so log10 FAR(s) = 1 - 10 s;
# identity threshold = 0.1 - 0.05 log10(FAR).
TOY = ClusterCalibration(
    model="toy",
    mean=0.1,
    rho=0.25,
    pair_tail=((1e-2, 0.3), (1e-3, 0.4), (1e-4, 0.5)),
    identity_tail=((1e-2, 0.2), (1e-3, 0.25), (1e-4, 0.3)),
)


def toy_pair(n: float, eps: float = STRANGERS_PER_FACE) -> float:
    """By hand: the pair bar at collection size n, 0.1 - 0.1 log10(eps / n)."""
    return 0.1 - 0.1 * math.log10(eps / n)


def toy_floor(n: float, eps: float = STRANGERS_PER_FACE) -> float:
    return min(0.1 - 0.05 * math.log10(8.0 / (n * n)), toy_pair(n, eps))


def test_local_sizes_and_bars_by_hand() -> None:
    assert BACKGROUND_RANK == 10 and MIN_STRANGERS == 3  # the hand values below assume them
    # face 0 (row 0): 12 neighbours, the first (row 1) in its own group
    s0 = [0.62, 0.55, 0.50, 0.48, 0.47, 0.46, 0.45, 0.44, 0.43, 0.42, 0.41, 0.40]
    # face 1 (row 20): only two neighbours outside its group (rows 21, 22 are its own)
    s1 = [0.70, 0.69, 0.30, 0.20] + [-np.inf] * 8
    # face 2 (row 30): far from everyone: 10th neighbour at 0.2
    s2 = [0.3 - 0.01 * i for i in range(12)]
    sims = np.array([s0, s1, s2], np.float32)
    ids = np.array(
        [
            list(range(1, 13)),
            [21, 22, 3, 4] + [-1] * 8,
            list(range(40, 52)),
        ]
    )
    rows = np.array([0, 20, 30])
    group = np.arange(60)
    group[1] = 0  # row 1 is in row 0's group
    group[21] = group[22] = 20
    n = 5000
    first = local_log_sizes(sims, ids, TOY, n)  # first pass: every neighbour, cap n
    refined = local_log_sizes(sims, ids, TOY, n, rows=rows, group=group, cap=math.inf)
    # face 0, first pass: the 10th neighbour 0.42: 10 / FAR = 10 * 10^(10 * 0.42 - 1)
    assert n < 10 * 10 ** (10 * 0.42 - 1)  # ... above the cap
    assert first[0] == pytest.approx(math.log10(n))
    # refined: its 10th stranger is 0.41 (row 1 is its own), no cap
    assert refined[0] == pytest.approx(math.log10(10 * 10 ** (10 * 0.41 - 1)), abs=1e-5)
    # face 1: four neighbours counted in the first pass (j = 4, the 4th at 0.20)
    assert MIN_COLLECTION > 4 * 10 ** (10 * 0.20 - 1)
    assert first[1] == pytest.approx(math.log10(MIN_COLLECTION))
    # refined: two strangers only (< MIN_STRANGERS): the collection's size
    assert refined[1] == pytest.approx(math.log10(n))
    # face 2: 10th neighbour at 0.21: 10 * 10^1.1 = 126 faces, clamped to MIN_COLLECTION
    assert first[2] == pytest.approx(math.log10(MIN_COLLECTION))

    # a face that sees too few strangers keeps the size it is given (its first pass)
    kept = local_log_sizes(
        sims, ids, TOY, n, rows=rows, group=group, cap=math.inf, fallback=np.array([9.0, 3.3, 9.0])
    )
    assert kept[1] == pytest.approx(3.3) and kept[0] == pytest.approx(refined[0])
    # first pass: uncapped sizes 10^4.2, 1,000 and 1,000 (clamped); median 1,000, so the
    # cap is min(N, TYPICAL_SPREAD x 1,000) = min(N, 10,000)
    assert TYPICAL_SPREAD == 10.0
    logs, _, cap = first_log_sizes(sims, ids, TOY, n)
    assert cap == pytest.approx(n)  # N = 5,000 is the smaller
    np.testing.assert_allclose(logs, [math.log10(n), 3.0, 3.0], atol=1e-9)
    logs, raw, cap = first_log_sizes(sims, ids, TOY, 10**6)
    assert cap == pytest.approx(1e4)  # ten times the median is the smaller
    np.testing.assert_allclose(logs, [4.0, 3.0, 3.0], atol=1e-9)
    logs, _, _ = first_log_sizes(sims, ids, TOY, 10**6, cap=1e9)
    assert logs[0] == pytest.approx(4.2, abs=1e-5)
    np.testing.assert_allclose(raw, [4.2, 3.0, 3.0], atol=1e-5)
    # an update: the collection's other faces count for the median (here 4 at 10^4.2)
    _, _, cap = first_log_sizes(sims, ids, TOY, 10**6, also=np.full(4, 4.2))
    assert cap == pytest.approx(10 * 10**4.2)

    rule = LocalRule(TOY, n)
    # the pair bar is the r-th stranger's similarity plus the tail's slope (0.1 a decade)
    # times the decades from r strangers to eps
    bar = rule.pair(refined[:1])[0]
    assert bar == pytest.approx(0.41 + 0.1 * math.log10(10 / STRANGERS_PER_FACE), abs=1e-5)
    assert bar == pytest.approx(toy_pair(10 ** refined[0]), abs=1e-9)
    # groups of 2 and 3 faces, mean log sizes 3.5 and 4.1: the larger size sets the bar
    size = 10**4.1
    scaled = 0.1 + (toy_pair(size) - 0.1) * math.sqrt(0.25 + 0.75 / 6)
    want = max(toy_floor(size), scaled)
    got = rule.merge(np.array([2.0]), np.array([3.0]), np.array([3.5]), np.array([4.1]))
    assert got[0] == pytest.approx(want, abs=1e-9)
    assert want == pytest.approx(toy_floor(size))  # here the people floor binds: 0.4648
    # the lowest bar of a face (groups of any size) at 10^4.1
    lowest = max(toy_floor(size), 0.1 + (toy_pair(size) - 0.1) * 0.5)
    assert rule.lowest(np.array([4.1]))[0] == pytest.approx(lowest, abs=1e-9)


def gram_vectors(gram: np.ndarray) -> np.ndarray:
    """Unit rows whose cosines are ``gram`` (positive definite)."""
    w, v = np.linalg.eigh(gram)
    assert w.min() > 0
    return (v * np.sqrt(w)).astype(np.float32)


def toy_collection() -> tuple[np.ndarray, np.ndarray]:
    """Person A (2 photos, cosine 0.62) far from everyone; a crowd of 12 look-alike
    strangers (mutual cosine 0.5) with person B (2 photos, 0.7) among them (0.5 to each)."""
    n = 16
    g = np.zeros((n, n))
    crowd = list(range(4, 16))
    b = [2, 3]
    g[np.ix_(crowd + b, crowd + b)] = 0.5
    g[0, 1] = g[1, 0] = 0.62
    g[2, 3] = g[3, 2] = 0.7
    np.fill_diagonal(g, 1.0)
    truth = np.array([0, 0, 1, 1] + list(range(2, 14)))
    return gram_vectors(g), truth


def test_density_rule_by_hand_on_a_small_collection() -> None:
    """In a collection expected to reach a million faces (pass 1 capped there), by hand with
    the toy tails (eps 0.3): A's 10th stranger is at cosine 0, local size 1 -> clamped to
    1,000, bar 0.452: A's photos (0.62) merge. Each crowd face and B's photos have their 10th
    stranger at 0.5: size 10 / 10^-4 = 1e5, bar 0.652: B's photos (0.7) merge, the crowd
    (0.5) does not, and B's pair joins no crowd face (it needs the people floor at 1e5,
    0.555). Switched off, the size-scaled rule at 1e6 (eps 0.1) asks 0.8 of every pair:
    both people are lost."""
    x, truth = toy_collection()
    n = 10**6
    assert toy_pair(MIN_COLLECTION) == pytest.approx(0.4523, abs=1e-4)
    assert toy_pair(1e5) == pytest.approx(0.6523, abs=1e-4)
    assert toy_floor(1e5) == pytest.approx(0.5548, abs=1e-4)
    assert toy_pair(1e6, eps=0.1) == pytest.approx(0.8)
    c = Clusterer(calibration=TOY, expected_size=n)
    r = c.fit(x)
    assert r.labels[0] == r.labels[1] != NOISE
    assert r.labels[2] == r.labels[3] != NOISE
    assert r.labels[0] != r.labels[2]
    assert np.all(r.labels[4:] == NOISE)  # the look-alikes are never forced together
    assert r.groups == 2
    np.testing.assert_allclose(r.local_size[:2], MIN_COLLECTION, rtol=1e-5)
    np.testing.assert_allclose(r.local_size[2:], 1e5, rtol=1e-3)
    off = Clusterer(calibration=TOY, expected_size=n, density=False).fit(x)
    assert off.groups == 0 and np.all(off.labels == NOISE)
    assert off.thresholds.pair == pytest.approx(0.8)
    assert np.isnan(off.local_size).all()


def test_density_rule_keeps_corrections_and_incremental_updates() -> None:
    """Corrections hold under the density rule, and faces added later are placed by it
    (the same groups as one full clustering of the toy collection)."""
    x, _ = toy_collection()
    n = 10**6
    full = Clusterer(calibration=TOY, expected_size=n).fit(x)
    # A's photos and B's photos arrive last
    order = np.array(list(range(4, 16)) + [0, 1, 2, 3])
    c = Clusterer(calibration=TOY, expected_size=n, refit_growth=None)
    c.fit(x[order[:12]])
    inc = c.add(x[order[12:]])
    assert c.fitted_at == 12
    np.testing.assert_array_equal(
        inc.labels[np.argsort(order)] >= 0, full.labels >= 0
    )  # the same faces grouped
    assert inc.labels[12] == inc.labels[13] != inc.labels[14] == inc.labels[15]
    # must-link: a crowd face tagged with A's photos joins them; cannot-link: B's second
    # photo is said not to be B's first photo's person
    tags = np.full(16, -1)
    tags[[0, 1, 4]] = 5
    tags[2] = 6
    r = cluster_embeddings(x, calibration=TOY, constraints=Constraints(tags, cannot=((3, 6),)))
    assert r.labels[0] == r.labels[1] == r.labels[4] != NOISE
    assert r.labels[3] != r.labels[2]


@pytest.mark.parametrize("rank", [BACKGROUND_RANK])
def test_no_faces_or_few_neighbours(rank: int) -> None:
    """Collections smaller than the rank: every face at the smallest local size."""
    x, _ = toy_collection()
    r = cluster_embeddings(x[: rank // 2], calibration=TOY)
    assert np.all(r.local_size == pytest.approx(MIN_COLLECTION))


def test_first_pass_cap_keeps_a_person_with_many_photos(monkeypatch) -> None:
    """A person with 12 photos (cosine 0.62 to each other) among 14 faces far from everyone,
    in a collection expected to reach a million. Counting their own photos as strangers, the
    person's faces look as dense as 10 / 10^-5.2 = 1.6e6 faces: at that size (capped at
    1e6) the bar is 0.752 and they would never pair. The first pass caps them at ten times
    the median local size (1,000: the far faces), 10,000, bar 0.552: they group, and the
    refinement, counting only strangers outside that group, keeps them."""
    n = 26
    g = np.eye(n)
    g[:12, :12] = 0.62
    np.fill_diagonal(g, 1.0)
    x = gram_vectors(g)
    assert toy_pair(1e4) == pytest.approx(0.5523, abs=1e-4)
    r = Clusterer(calibration=TOY, expected_size=10**6).fit(x)
    assert r.groups == 1 and r.sizes[0] == 12 and np.all(r.labels[12:] == NOISE)
    monkeypatch.setattr(dn, "TYPICAL_SPREAD", math.inf)  # the cap at N alone
    off = Clusterer(calibration=TOY, expected_size=10**6).fit(x)
    assert off.groups == 0
