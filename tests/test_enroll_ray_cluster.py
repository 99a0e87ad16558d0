"""Bulk enrolment on a real two-node Ray cluster (a head and a second node on loopback, one
CPU each) into a real Milvus standalone server, against the local engine; and a node
killed in the middle of a run.

With ``--actors 2`` and one CPU per actor, the two embedding actors can only run one on each
node (the run could not start otherwise), so both nodes embed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from npcface.enroll import enroll_images, list_images
from npcface.errors import GalleryError
from npcface.gallery import Gallery

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.slow  # a cluster and a server start: a few minutes in all

PEOPLE = ("Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from ray_cluster import RayCluster, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    with RayCluster(tmp_path_factory.mktemp("ray-logs"), workers=1, cpus=1) as c:
        yield c


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from milvus_server import MilvusServer, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    with MilvusServer(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server.address


@pytest.fixture(scope="module")
def recognizer():
    from npcface import FaceRecognizer

    return FaceRecognizer(preset="fast")


def _enroll(cluster, gallery: str, images: Path, *more: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "npcface.cli", "enroll", gallery, str(images), "--engine",
           "ray", "--address", cluster.address, "--actors", "2", "--preset", "fast",
           "--no-progress", "--json", "--batch-size", "4", *more]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env
    )


def _copy(root: Path, people: dict[str, list[Path]]) -> None:
    for person, files in people.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / person / f.name).write_bytes(f.read_bytes())


def test_two_node_cluster_enrols_into_the_milvus_server_as_the_local_engine_does(
    tmp_path: Path, lfw_dir: Path, cluster, milvus: str, recognizer
) -> None:
    nodes = cluster.alive_nodes()
    assert len(nodes) == 2 and all(n["cpus"] == 1 for n in nodes), nodes

    images = tmp_path / "images"
    files = {p: sorted((lfw_dir / "images" / p).iterdir()) for p in PEOPLE}
    _copy(images, {p: f[:3] for p, f in files.items()})
    (images / "Tony_Blair" / "broken.jpg").write_bytes(b"not an image")
    probes = [f[5] for f in files.values()]

    uri = f"milvus://{milvus}/cluster_enrol"
    proc = _enroll(cluster, uri, images, "--report", str(tmp_path / "report.csv"))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert proc.pid in cluster.driver_pids()  # it ran on this cluster, not a Ray of its own
    summary = json.loads(out)
    assert (summary["enrolled"], summary["failed"]) == (12, 1), summary
    with open(tmp_path / "report.csv", newline="") as fh:
        assert [(Path(r["path"]).name, r["kind"]) for r in csv.DictReader(fh)] == [
            ("broken.jpg", "unreadable")
        ]

    with Gallery.create(tmp_path / "local", 128) as local:
        enroll_images(local, recognizer, list_images(images), workers=0, progress=False)
        local_counts = local.template_counts()
        queries = np.stack([e.embedding for e in recognizer.embed_many([str(p) for p in probes])])
        local_hits = local.search(queries, k=3)
    with Gallery.open(uri, readonly=True) as g:
        assert g.template_counts() == local_counts == {p: 3 for p in sorted(PEOPLE)}
        assert len(g.content_hashes()) == 12  # every photo once
        hits = g.search(queries, k=3)
    for got, want, person in zip(hits, local_hits, PEOPLE, strict=True):
        assert got[0].identity == want[0].identity == person
        assert [m.identity for m in got] == [m.identity for m in want]
        np.testing.assert_allclose(
            [m.similarity for m in got], [m.similarity for m in want], atol=1e-4
        )


def test_a_node_killed_mid_run_loses_nothing_and_the_run_resumes(
    tmp_path: Path, lfw_dir: Path, cluster, milvus: str
) -> None:
    images = tmp_path / "images"
    people = sorted(p for p in (lfw_dir / "images").iterdir() if len(list(p.iterdir())) >= 4)
    _copy(images, {p.name: sorted(p.iterdir())[:4] for p in people[:40]})
    assert len(list_images(images)) == 160
    n_photos = 160

    uri = f"milvus://{milvus}/cluster_kill"
    proc = _enroll(cluster, uri, images, "--report", str(tmp_path / "first.csv"))
    # kill the second node once the writer has committed some templates
    deadline = time.monotonic() + 600
    committed = 0
    while committed < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
        try:
            with Gallery.open(uri, readonly=True) as g:
                committed = g.info().templates
        except GalleryError:  # not created yet, or half created (no settings row yet)
            continue
    assert proc.poll() is None and committed >= 8, "the run ended before the kill"
    cluster.kill_node(1)
    out, err = proc.communicate(timeout=900)
    with Gallery.open(uri, readonly=True) as g:
        after_kill = g.info().templates
        hashes_after_kill = g.content_hashes()
    assert after_kill >= committed  # nothing acknowledged before the kill is gone
    # the lost node's batches went to the head's actor: the interrupted run itself completed
    assert proc.returncode == 0, err[-3000:]
    first = json.loads(out)
    assert first["enrolled"] == after_kill == len(hashes_after_kill)
    assert first["enrolled"] + first["failed"] == n_photos, first

    # the same command again (the head alone now: one actor) completes the gallery
    report = tmp_path / "rerun.csv"
    rerun = _enroll(cluster, uri, images, "--actors", "1", "--report", str(report))
    out2, err2 = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err2[-3000:]
    with Gallery.open(uri, readonly=True) as g:
        hashes = g.content_hashes()
        assert g.info().templates == len(hashes)  # no photo twice
    assert hashes_after_kill == hashes  # nothing was left to enrol
    summary = json.loads(out2)
    assert summary["enrolled"] == 0 and summary["skipped"] == len(hashes), summary
    # every photo is in the gallery once, or reported (a photo without a usable face)
    assert len(hashes) + summary["failed"] == n_photos, summary
    with open(report, newline="") as fh:
        kinds = {r["kind"] for r in csv.DictReader(fh)}
    assert kinds <= {"no_face", "low_quality"}, kinds  # none lost to the kill
    assert summary["failed"] <= 8, summary
