"""npcface.cluster: average linkage against SciPy, the size-aware thresholds, constraints,
noise, the incremental path against a full run on real LFW faces, typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import lfw_image

from npcface.cluster import NOISE, Clusterer, Constraints, cluster_embeddings
from npcface.cluster.calibration import calibration_for
from npcface.cluster.linkage import average_linkage
from npcface.errors import EmbeddingError, InvalidArgumentError
from npcface.eval.clustering import clustering_scores, noise_as_singletons


def people(n_people: int, per: int, dim: int = 64, spread: float = 0.55, seed: int = 0):
    """Unit vectors around ``n_people`` random centres, ``per`` each: (x, truth)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_people), per)
    x = centres[truth] + spread * rng.standard_normal((len(truth), dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings (noise as singletons) group the items the same way."""
    a, b = noise_as_singletons(a), noise_as_singletons(b)
    return clustering_scores(a, b).bcubed_f == pytest.approx(1.0)


# --------------------------------------------------------------------------- the engine
@pytest.mark.parametrize(("seed", "cut"), [(0, 0.5), (1, 0.3), (2, 0.7)])
def test_average_linkage_matches_scipy(seed: int, cut: float) -> None:
    """With one threshold and every pair as a candidate, the reciprocal-nearest-neighbour
    rounds give exactly SciPy's average-linkage tree cut at that similarity."""
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    from scipy.spatial.distance import pdist

    x, _ = people(12, 6, spread=0.9, seed=seed)
    n = len(x)
    a, b = np.triu_indices(n, 1)
    ours = average_linkage(x, a, b, lambda sa, sb: np.full(len(sa), cut))
    tree = hierarchy.linkage(pdist(x.astype(np.float64), "cosine"), method="average")
    # merges happen at mean similarity >= cut, i.e. cosine distance <= 1 - cut
    theirs = hierarchy.fcluster(tree, t=1.0 - cut, criterion="distance")
    assert same_partition(ours, theirs)
    assert len(np.unique(ours)) not in (1, n)  # the cut is a real test, not a trivial one


def test_flat_threshold_of_cluster_embeddings_matches_scipy() -> None:
    """The public path (FAISS graph, k neighbours) with ``threshold=`` gives SciPy's groups
    on well-separated people (k covers every same-person neighbour)."""
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    from scipy.spatial.distance import pdist

    x, _ = people(20, 5, spread=0.8, seed=3)
    r = cluster_embeddings(x, threshold=0.5)
    tree = hierarchy.linkage(pdist(x.astype(np.float64), "cosine"), method="average")
    assert same_partition(r.labels, hierarchy.fcluster(tree, t=0.5, criterion="distance"))


# --------------------------------------------------------------------------- thresholds
def test_thresholds_rise_with_the_collection_and_fall_with_group_size() -> None:
    cal = calibration_for("sface-int8")
    small, big = cal.thresholds(10_000), cal.thresholds(1_000_000)
    assert big.pair > small.pair > 0.4  # far above the verify threshold (~0.37)
    assert big.floor >= small.floor
    m = small.merge(np.array([1, 2, 10, 100]), np.array([1, 2, 10, 100]))
    assert np.all(np.diff(m) <= 0)  # bigger groups merge at a lower mean similarity
    assert m[0] == pytest.approx(small.pair)
    assert np.all(m >= small.floor - 1e-12)
    assert small.lowest == pytest.approx(m.min(), abs=0.02)
    # a collection below MIN_COLLECTION is never looser than 1,000 faces
    assert cal.thresholds(10).pair == pytest.approx(cal.thresholds(1000).pair)


def test_unknown_model_has_no_calibration() -> None:
    with pytest.raises(InvalidArgumentError, match="no clustering calibration"):
        cluster_embeddings(people(2, 3)[0], model="no-such-model")


# --------------------------------------------------------------------------- result
def test_result_groups_noise_and_representatives() -> None:
    x, truth = people(5, 6, seed=4)
    lone = people(3, 1, seed=99)[0]  # three faces of three other people
    r = cluster_embeddings(np.concatenate([x, lone]), threshold=0.5)
    assert r.groups == 5 and same_partition(r.labels[:30], truth)
    assert np.all(r.labels[30:] == NOISE) and r.noise[30:].all()
    assert np.isnan(r.confidence[30:]).all() and not np.isnan(r.confidence[:30]).any()
    assert list(r.sizes) == [6] * 5
    for g in range(r.groups):
        members = r.members(g)
        assert r.representatives[g] in members
        # confidence: the mean cosine to the group's other faces (by hand)
        sims = x[members] @ x[members].T
        mean_other = (sims.sum(1) - np.diag(sims)) / (len(members) - 1)
        np.testing.assert_allclose(r.confidence[members], mean_other, atol=1e-5)
        assert r.representatives[g] == members[np.argmax(mean_other)]
    with pytest.raises(InvalidArgumentError):
        r.members(5)
    with pytest.raises(ValueError):
        r.labels[0] = 3  # read-only


def test_low_quality_faces_are_noise_and_never_grouped() -> None:
    x, _ = people(2, 4, seed=5)
    q = np.ones(8)
    q[[0, 5]] = 0.1
    r = cluster_embeddings(x, quality=q, min_quality=0.5, threshold=0.5)
    assert r.labels[0] == NOISE and r.labels[5] == NOISE
    assert r.low_quality.tolist() == [i in (0, 5) for i in range(8)]
    assert r.groups == 2 and sorted(r.sizes.tolist()) == [3, 3]


# --------------------------------------------------------------------------- constraints
def test_must_link_and_cannot_link() -> None:
    x, truth = people(4, 5, seed=6)
    free = cluster_embeddings(x, threshold=0.5)
    assert same_partition(free.labels, truth)
    # must-link: a face of person 3 tagged with person 0's faces joins them
    tags = np.full(20, -1)
    tags[[0, 1, 15]] = 7
    r = cluster_embeddings(x, threshold=0.5, constraints=Constraints(tags))
    assert r.labels[15] == r.labels[0] == r.labels[1]
    assert r.tags[r.labels[0]] == 7
    # cannot-link between tags: two tags on one person's faces stay two groups
    tags = np.full(20, -1)
    tags[[0, 1]] = 1
    tags[[2, 3]] = 2
    r = cluster_embeddings(x, threshold=0.5, constraints=Constraints(tags))
    assert r.labels[0] == r.labels[1] != r.labels[2] == r.labels[3]
    assert r.labels[4] in (r.labels[0], r.labels[2])  # the untagged face joins one of them
    # "not this person": face 4 never joins the group of tag 1
    tags = np.full(20, -1)
    tags[[0, 1, 2, 3]] = 1
    r = cluster_embeddings(x, threshold=0.5, constraints=Constraints(tags, cannot=((4, 1),)))
    assert r.labels[4] != r.labels[0]
    assert same_partition(r.labels[5:], truth[5:])


def test_constraints_hold_across_incremental_updates() -> None:
    x, truth = people(4, 6, seed=7)
    order = np.random.default_rng(0).permutation(24)
    x, truth = x[order], truth[order]
    tags = np.full(24, -1)
    first_of = {p: np.flatnonzero(truth == p) for p in range(4)}
    a, b = first_of[0][:2], first_of[0][2:4]
    tags[a], tags[b] = 1, 2  # one person's faces said to be two people
    c = Clusterer(threshold=0.5)
    c.fit(x[:12], constraints=Constraints(tags[:12]))
    r = c.add(x[12:], constraints=Constraints(tags, cannot=((int(first_of[1][-1]), 1),)))
    assert len({int(r.labels[i]) for i in a}) == 1 and len({int(r.labels[i]) for i in b}) == 1
    assert r.labels[a[0]] != r.labels[b[0]]
    assert r.labels[first_of[1][-1]] != r.labels[a[0]]


@pytest.mark.parametrize(
    "constraints",
    [
        Constraints(np.zeros(5, np.int64)),  # wrong length
        Constraints(np.zeros(6, np.float64)),  # not ints
        Constraints(np.full(6, -1), cannot=((9, 0),)),  # no such face
        Constraints(np.array([0, -1, -1, -1, -1, -1]), cannot=((0, 0),)),  # tagged and not
    ],
    ids=["length", "dtype", "row", "contradiction"],
)
def test_bad_constraints_are_typed_errors(constraints: Constraints) -> None:
    with pytest.raises(InvalidArgumentError):
        cluster_embeddings(people(2, 3)[0], constraints=constraints, threshold=0.5)


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "error"),
    [
        (np.full((3, 8), np.nan, np.float32), {}, EmbeddingError),
        (np.zeros((3, 8), np.float32), {}, EmbeddingError),
        (np.ones((2, 3, 8), np.float32), {}, EmbeddingError),
        (np.ones((3, 8), np.float32), {"threshold": 2.0}, InvalidArgumentError),
        (np.ones((3, 8), np.float32), {"k": 0}, InvalidArgumentError),
        (np.ones((3, 8), np.float32), {"min_quality": 1.5}, InvalidArgumentError),
        (np.ones((3, 8), np.float32), {"min_quality": 0.5, "quality": [1.0]}, InvalidArgumentError),
    ],
    ids=["nan", "zero", "3-d", "threshold", "k", "min_quality", "quality-length"],
)
def test_bad_input_is_a_typed_error(embeddings, kwargs, error) -> None:
    with pytest.raises(error):
        cluster_embeddings(embeddings, **kwargs)


def test_no_faces_and_one_face() -> None:
    empty = cluster_embeddings(np.zeros((0, 8), np.float32))
    assert len(empty) == 0 and empty.groups == 0
    one = cluster_embeddings(np.ones((1, 8), np.float32))
    assert one.labels.tolist() == [NOISE]


def test_add_checks_the_dimension() -> None:
    c = Clusterer(threshold=0.5)
    c.fit(people(2, 3, dim=16)[0])
    with pytest.raises(InvalidArgumentError, match="dimensions"):
        c.add(people(1, 2, dim=8)[0])


# --------------------------------------------------------------------------- real faces
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder")
LONE = ("AJ_Cook", "AJ_Lamas", "Aaron_Eckhart", "Aaron_Guiel", "Aaron_Patterson", "Aaron_Tippin")


@pytest.fixture(scope="module")
def lfw_faces(lfw_dir: Path, recognizer):
    """Embeddings of 5 photos each of 5 LFW people and one photo each of 6 others (the
    default pipeline)."""
    paths, truth = [], []
    for p in PEOPLE:
        for i in range(1, 6):
            paths.append(lfw_image(lfw_dir, p, i))
            truth.append(p)
    for p in LONE:
        paths.append(lfw_image(lfw_dir, p, 1))
        truth.append(p)
    results = recognizer.embed_many(paths)
    assert all(r.ok for r in results)
    return np.stack([r.embedding for r in results]), np.array(truth), recognizer.info.name


def test_real_faces_group_into_people_and_loners_are_noise(lfw_faces) -> None:
    x, truth, model = lfw_faces
    r = cluster_embeddings(x, model=model)
    assert same_partition(r.labels[:25], np.repeat(np.arange(5), 5))
    assert r.groups == 5 and np.all(r.labels[25:] == NOISE)
    assert np.nanmin(r.confidence) > r.thresholds.floor


def test_incremental_matches_a_full_run_on_real_faces(lfw_faces) -> None:
    x, truth, model = lfw_faces
    order = np.random.default_rng(1).permutation(len(x))
    x, truth = x[order], truth[order]
    full = cluster_embeddings(x, model=model)
    c = Clusterer(model=model, refit_growth=None)  # never cluster everything again
    c.fit(x[:10])
    for start in range(10, len(x), 7):
        inc = c.add(x[start : start + 7])
    assert c.fitted_at == 10  # every add took the incremental path
    np.testing.assert_array_equal(inc.labels, full.labels)
    # a collection taken up in another process places new faces the same way
    d = Clusterer(model=model)
    d.restore(x[:24], noise_as_singletons(full.labels[:24]))
    np.testing.assert_array_equal(d.add(x[24:]).labels, full.labels)
