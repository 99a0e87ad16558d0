"""The CLI's exit codes and outputs: 0 same person, 1 different, 2 error with one line."""

import json
import subprocess
import sys

import pytest
from conftest import lfw_image

from npcface.cli import main


def test_verify_exit_codes(lfw_dir, capsys):
    a1, a2 = lfw_image(lfw_dir, "Colin_Powell", 1), lfw_image(lfw_dir, "Colin_Powell", 2)
    b = lfw_image(lfw_dir, "Serena_Williams", 1)
    assert main(["verify", str(a1), str(a2)]) == 0
    assert "same person" in capsys.readouterr().out
    assert main(["verify", str(a1), str(b), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is False and out["similarity"] < out["threshold"]
    # an absurdly strict threshold turns "same" into "different"
    assert main(["verify", str(a1), str(a2), "--threshold", "0.9999"]) == 1


def test_verify_pipeline_options_reach_the_recognizer(lfw_dir, capsys):
    """--det-min-side and --no-flip (the default preset fuses flips) change the embeddings,
    so they change the similarity; so do --preset fast and --flip on it."""
    a1, a2 = lfw_image(lfw_dir, "Colin_Powell", 1), lfw_image(lfw_dir, "Colin_Powell", 2)

    def similarity(*extra: str) -> float:
        assert main(["verify", str(a1), str(a2), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["similarity"]

    plain = similarity()
    assert similarity("--det-min-side", "500") != pytest.approx(plain, abs=1e-6)
    assert similarity("--no-flip") != pytest.approx(plain, abs=1e-6)
    fast = similarity("--preset", "fast")
    assert fast != pytest.approx(plain, abs=1e-6)
    assert similarity("--preset", "fast", "--flip") != pytest.approx(fast, abs=1e-6)


def test_verify_errors_exit_2_with_one_line(tmp_path, lfw_dir, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    good = lfw_image(lfw_dir, "Colin_Powell", 1)
    assert main(["verify", str(bad), str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.jpg" in err
    blank = tmp_path / "blank.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(blank), np.full((100, 100, 3), 128, np.uint8))
    assert main(["verify", str(blank), str(good)]) == 2
    assert "no face" in capsys.readouterr().err


def test_detect_json_and_draw(lfw_dir, tmp_path, capsys):
    out_png = tmp_path / "drawn.png"
    assert (
        main(["detect", str(lfw_image(lfw_dir, "Tony_Blair", 1)), "--json", "--draw", str(out_png)])
        == 0
    )
    faces = json.loads(capsys.readouterr().out)
    assert len(faces) >= 1 and len(faces[0]["landmarks"]) == 5
    assert out_png.stat().st_size > 1000


def test_console_script_runs(lfw_dir):
    """As a command (``run``: verify ends with os._exit once its answer is out), the output
    is complete and the exit status the answer's."""
    a = lfw_image(lfw_dir, "Colin_Powell", 1)
    b = lfw_image(lfw_dir, "Serena_Williams", 1)
    proc = subprocess.run(
        [sys.executable, "-m", "npcface.cli", "verify", str(a), str(a)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("same person: similarity 1.0000")
    proc = subprocess.run(
        [sys.executable, "-m", "npcface.cli", "verify", str(a), str(b), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and json.loads(proc.stdout)["verified"] is False


def test_unknown_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_bench_reports_every_stage(lfw_dir, capsys):
    folder = lfw_dir / "images" / "Colin_Powell"
    assert main(["bench", str(folder), "--limit", "3", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 images, 3 with a face")
    for stage in ("decode", "detect", "align", "quality", "embed", "total"):
        assert stage in out


def test_bench_without_images_is_an_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err


def test_a_command_line_builds_only_its_commands_group():
    """Each command is declared with its group (so that a command line imports only that
    group); the declaration must match what the groups register."""
    from npcface import cli

    def commands(parser):
        return set(parser._subparsers._group_actions[0].choices)

    declared = {c for *_, group in cli._GROUPS for c in group}
    assert commands(cli.build_parser()) == declared
    assert commands(cli.build_parser("verify")) == {"verify", "detect"}
    assert commands(cli.build_parser("identify")) == {"enroll", "identify", "gallery"}
    assert commands(cli.build_parser("nonsense")) == declared  # argparse lists them all
