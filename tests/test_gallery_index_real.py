"""Every tier of the ``auto`` index keeps rank-1 on real faces (small scale).

Mates and probes are real: a few hundred LFW photos embedded by the default recogniser. The
gallery is the first photo of each person plus 20,000 distractors drawn from a Gaussian
fitted to those embeddings (the set-up of ``bench/gallery_scale.py``, which runs it at 100k
to 10M). Each tier's factory and default search parameters are forced at this size and its
rank-1 is compared with exact search done in numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npcface.gallery import index as ix

DISTRACTORS = 20_000
PEOPLE = 120
PHOTOS_PER_PERSON = 3


@pytest.fixture(scope="module")
def real_set(lfw_dir: Path):
    """(gallery (G, 128), probes (P, 128), probe's mate row (P,)): mates at rows 0..M-1."""
    from npcface import FaceRecognizer
    from npcface.eval.lfw import embed_paths

    people = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())
    chosen: list[list[Path]] = []
    for person in people:
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 2:
            chosen.append(photos[:PHOTOS_PER_PERSON])
        if len(chosen) == PEOPLE:
            break
    paths = [p for photos in chosen for p in photos]
    owner = np.repeat(np.arange(len(chosen)), [len(ph) for ph in chosen])
    table = embed_paths(FaceRecognizer(face_policy="center"), paths, progress=False)
    ok = np.array([p not in table.failed for p in paths])
    emb, owner = table.embeddings[ok], owner[ok]
    first = np.r_[True, owner[1:] != owner[:-1]]
    mates, probes, probe_owner = emb[first], emb[~first], owner[~first]
    row = {o: i for i, o in enumerate(owner[first])}
    probe_mate = np.array([row[o] for o in probe_owner if o in row])
    probes = probes[[o in row for o in probe_owner]]

    mean = emb.astype(np.float64).mean(axis=0)
    cov = np.cov(emb.astype(np.float64), rowvar=False) + 1e-6 * np.eye(emb.shape[1])
    rng = np.random.default_rng(0)
    dis = rng.multivariate_normal(mean, cov, size=DISTRACTORS, method="cholesky")
    dis /= np.linalg.norm(dis, axis=1, keepdims=True)
    gallery = np.ascontiguousarray(np.vstack([mates, dis]), dtype=np.float32)
    return gallery, np.ascontiguousarray(probes, dtype=np.float32), probe_mate


@pytest.mark.slow
def test_distractors_look_like_strangers(real_set):
    """The fitted Gaussian gives probes the similarity spread real strangers give them, and
    exact search still finds most mates (else the comparison below would mean little)."""
    gallery, probes, probe_mate = real_set
    m = int(probe_mate.max()) + 1
    sims = probes @ gallery.T
    mates = gallery[:m]
    real_strangers = (probes @ mates.T)[np.arange(m)[None, :] != probe_mate[:, None]]
    fake_strangers = sims[:, m:].ravel()
    assert abs(fake_strangers.mean() - real_strangers.mean()) < 0.03
    assert abs(fake_strangers.std() - real_strangers.std()) < 0.03
    exact_rank1 = np.mean(sims.argmax(axis=1) == probe_mate)
    assert 0.8 < exact_rank1 < 1.0  # hard enough that an index can lose mates


@pytest.mark.slow
@pytest.mark.parametrize("tier", range(len(ix.auto_tiers(128))))
def test_every_auto_tier_keeps_rank1_of_exact_search(real_set, tier):
    gallery, probes, probe_mate = real_set
    n, dim = gallery.shape
    _, factory = ix.auto_tiers(dim)[tier]
    exact_rank1 = np.mean((probes @ gallery.T).argmax(axis=1) == probe_mate)

    index = ix.create_index(factory, dim)
    if not index.is_trained:
        ix.train_index(index, gallery)
    index.add_with_ids(gallery, np.arange(n, dtype=np.int64))
    params = ix.default_search_params(factory, n, dim)
    if params:
        ix.apply_search_params(index, params)
    _, labels = index.search(probes, 2)  # a gallery asks for 2 templates when k=1
    rank1 = np.mean(labels[:, 0] == probe_mate)
    assert rank1 >= 0.99 * exact_rank1, (factory, params, rank1, exact_rank1)
