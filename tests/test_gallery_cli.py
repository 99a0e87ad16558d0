"""``npcface gallery ...``, ``npcface enroll`` and ``npcface identify``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from npcface import FaceRecognizer
from npcface.cli import main
from npcface.gallery import Gallery


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_gallery_maintenance_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "g")
    code, out, _ = run(capsys, "gallery", "create", path, "--dim", "16", "--model", "m1")
    assert code == 0 and "IDMap2,Flat" in out
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((30, 16)).astype(np.float32)
    with Gallery.open(path) as g:
        g.add_many([f"p{i % 10}" for i in range(30)], vecs)

    code, out, _ = run(capsys, "gallery", "info", path, "--json", "--check")
    info = json.loads(out)
    assert code == 0 and info["identities"] == 10 and info["templates"] == 30
    assert info["model"] == "m1" and info["check"]["ok"] and info["factory"] == "IDMap2,Flat"

    code, out, _ = run(capsys, "gallery", "list", path, "--json")
    assert {r["identity"]: r["templates"] for r in json.loads(out)} == {
        f"p{i}": 3 for i in range(10)
    }

    code, out, _ = run(capsys, "gallery", "remove", path, "p3", "p4")
    assert code == 0 and "removed p3: 3 templates" in out
    code, _, err = run(capsys, "gallery", "remove", path, "p3")
    assert code == 2 and "no identity named 'p3'" in err

    code, out, _ = run(capsys, "gallery", "rebuild", path, "--index", "HNSW32,Flat")
    assert code == 0 and "IDMap,HNSW32,Flat over 24 templates" in out
    with Gallery.open(path) as g:
        g.remove("p5")
        assert g.tombstones == 0  # HNSW cannot remove: re-indexed without p5 (erasure)
    code, out, _ = run(capsys, "gallery", "compact", path)
    assert code == 0 and "dropped 0 deleted templates" in out
    code, out, _ = run(capsys, "gallery", "info", path, "--check")
    assert code == 0 and "IDMap,HNSW32,Flat" in out and "check" in out

    # the answers after all that are still the brute-force ones
    keep = np.array([i % 10 not in (3, 4, 5) for i in range(30)])
    q = rng.standard_normal((5, 16)).astype(np.float32)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    ).T
    sims[:, ~keep] = -np.inf
    with Gallery.open(path, readonly=True) as g:
        got = [r[0].identity for r in g.search(q, k=1)]
    assert got == [f"p{j % 10}" for j in sims.argmax(axis=1)]


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "gallery", "info", str(tmp_path / "none"))
    assert code == 2 and "no gallery here" in err and "gallery create" in err
    code, _, err = run(
        capsys, "gallery", "create", str(tmp_path / "x"), "--dim", "8", "--index", "Nope9"
    )
    assert code == 2 and "invalid FAISS factory string" in err


def test_enroll_and_identify_commands(
    tmp_path: Path, lfw_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("npcface.recognizer")
    images = tmp_path / "images"
    for person in ("Jean_Chretien", "Hans_Blix", "Ari_Fleischer"):
        (images / person).mkdir(parents=True)
        for f in sorted((lfw_dir / "images" / person).iterdir())[:3]:
            shutil.copy(f, images / person / f.name)
    (images / "Hans_Blix" / "notes.png").write_bytes(b"\x89PNG broken")
    gal = str(tmp_path / "gal")
    code, out, _ = run(
        capsys, "enroll", gal, str(images), "--json", "--no-progress", "--workers", "1"
    )
    summary = json.loads(out)
    assert code == 0 and summary["enrolled"] == 9 and summary["failed"] == 1
    assert summary["gallery"]["identities"] == 3 and summary["gallery"]["dim"] == 128

    probe = str(lfw_dir / "images" / "Hans_Blix" / "Hans_Blix_0010.jpg")
    code, out, _ = run(capsys, "identify", gal, probe, "--top-k", "2", "--json")
    (line,) = [json.loads(x) for x in out.splitlines()]
    # by default only matches at the FAR 1e-3 threshold: Hans Blix (0.79), not Ari Fleischer
    # (0.25 to this probe)
    assert code == 0 and line["probe"] == probe and line["far"] == 1e-3
    assert [m["identity"] for m in line["matches"]] == ["Hans_Blix"]
    assert line["threshold"] == FaceRecognizer().default_threshold(1e-3)
    code, out, _ = run(capsys, "identify", gal, probe, "--top-k", "2", "--threshold", "-1")
    assert code == 0 and [x.split()[-1] for x in out.splitlines()] == ["Hans_Blix", "Ari_Fleischer"]
    code, out, _ = run(capsys, "identify", gal, probe, "--threshold", "0.99")
    assert code == 1 and out.strip() == "no match at threshold 0.99"
    code, _, err = run(capsys, "identify", gal, probe, "--threshold", "1.01")
    assert code == 2 and "cosine similarity" in err  # a threshold is a cosine in [-1, 1]
    code, _, err = run(capsys, "identify", gal, probe, "--far", "3e-3")
    assert code == 2 and "no threshold calibrated for FAR 0.003" in err

    # a stranger (best similarity 0.20 to Jean Chretien) is nobody at FAR 1e-3
    stranger = str(lfw_dir / "images" / "Serena_Williams" / "Serena_Williams_0001.jpg")
    code, out, _ = run(capsys, "identify", gal, stranger)
    assert code == 1 and out.startswith("no match at FAR 1e-3 (threshold 0.")

    # many probes in one call: a folder, a CSV and a file; one line per probe, in order
    probes = tmp_path / "probes"
    probes.mkdir()
    shutil.copy(stranger, probes / "a_stranger.jpg")
    shutil.copy(lfw_dir / "images" / "Jean_Chretien" / "Jean_Chretien_0010.jpg", probes / "b.jpg")
    (probes / ".hidden.jpg").write_bytes(b"not looked at")
    listing = tmp_path / "list.csv"
    listing.write_text("path\nprobes/b.jpg\n# a comment\n")
    code, out, _ = run(capsys, "identify", gal, str(probes), str(listing), probe, "--json")
    lines = [json.loads(x) for x in out.splitlines()]
    assert [Path(x["probe"]).name for x in lines] == [
        "a_stranger.jpg",
        "b.jpg",
        "b.jpg",
        probe.split("/")[-1],
    ]
    assert [[m["identity"] for m in x["matches"]] for x in lines] == [
        [],
        ["Jean_Chretien"],
        ["Jean_Chretien"],
        ["Hans_Blix"],
    ]
    assert code == 1  # the stranger has no match
    # a probe without a usable face is reported on its line; the others still are; exit 2
    code, out, _ = run(
        capsys, "identify", gal, str(images / "Hans_Blix" / "notes.png"), probe, "--json"
    )
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 2 and lines[0]["error"] == "unreadable" and "notes.png" in lines[0]["message"]
    assert lines[1]["matches"][0]["identity"] == "Hans_Blix"

    code, out, _ = run(capsys, "enroll", gal, str(images), "--no-progress", "--workers", "0")
    assert code == 0 and "enrolled 0, skipped 9" in out


def test_enrolled_folder_names_are_one_unicode_form(
    tmp_path: Path, lfw_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder named as macOS writes it (NFD) and the same name typed elsewhere (NFC)
    are one identity, stored and listed in NFC; removal takes either spelling."""
    nfd, nfc = "Jean Chre\u0301tien", "Jean Chr\u00e9tien"
    photos = sorted((lfw_dir / "images" / "Jean_Chretien").iterdir())[:4]
    for folder, chosen in ((nfd, photos[:2]), (nfc, photos[2:])):
        (tmp_path / "people" / folder).mkdir(parents=True)
        for f in chosen:
            shutil.copy(f, tmp_path / "people" / folder / f.name)
    gal = str(tmp_path / "gal")
    code, _, _ = run(capsys, "enroll", gal, str(tmp_path / "people"), "--no-progress")
    assert code == 0
    code, out, _ = run(capsys, "gallery", "list", gal, "--json")
    assert json.loads(out) == [{"identity": nfc, "templates": 4}]
    code, out, _ = run(capsys, "gallery", "remove", gal, nfd)
    assert code == 0
    with Gallery.open(gal, readonly=True) as g:
        assert len(g) == 0


@pytest.mark.slow
def test_milvus_lite_start_up_noise_stays_off_the_terminal(tmp_path: Path) -> None:
    """Milvus Lite's embedded server answers calls it lacks with gRPC ERROR tracebacks
    though the gallery works: the user sees only the result; -vv shows them as one debug
    line each."""
    pytest.importorskip("milvus_lite")
    import subprocess
    import sys

    def create(*flags: str, name: str) -> subprocess.CompletedProcess:
        uri = f"milvus-lite://{tmp_path / name}.db"
        return subprocess.run(
            [sys.executable, "-m", "npcface.cli", *flags, "gallery", "create", uri, "--dim", "8"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    quiet = create(name="a")
    assert quiet.returncode == 0 and quiet.stdout.startswith("created milvus-lite://")
    assert quiet.stderr == ""
    verbose = create("-vv", name="b")
    assert verbose.returncode == 0 and "Traceback" not in verbose.stderr
    assert (
        "DEBUG npcface.gallery.milvus.connection: Milvus Lite does not implement" in verbose.stderr
    )


def test_identify_takes_threshold_or_far_never_both(
    tmp_path: Path, lfw_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one identify contract, on the command line too."""
    gal = tmp_path / "gal"
    Gallery.create(gal, 128).close()
    probe = str(lfw_dir / "images" / "Hans_Blix" / "Hans_Blix_0001.jpg")
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "identify", str(gal), probe, "--threshold", "0.3", "--far", "1e-3")
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err
