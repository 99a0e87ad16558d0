"""The README against the code: its Python snippets run, its command lines parse, its
thresholds are the code's, and it stays a few screens long."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import REPO, lfw_image

README = REPO / "README.md"
SERVER_NEEDED = "# needs a running server"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_is_a_few_screens():
    assert len(README.read_bytes()) < 8 * 1024


def test_readme_thresholds_are_the_codes():
    """Every "0.xxxx at FAR 1e-k" in the README is the threshold the default recogniser
    uses for that FAR, and the default is the one at FAR 1e-3."""
    from npcface import FaceRecognizer

    text = " ".join(README.read_text().split())
    stated = re.findall(r"(0\.\d{4}) at FAR (1e-\d+)", text)
    assert {far for _, far in stated} >= {"1e-3", "1e-4"}
    rec = FaceRecognizer()
    for value, far in stated:
        assert float(value) == rec.default_threshold(float(far)), (value, far)
    assert rec.default_threshold() == rec.default_threshold(1e-3)


def test_readme_command_lines_parse():
    """Every `npcface ...` line of the README's shell blocks is accepted by the CLI's parser
    (options and sub-commands exist; nothing runs)."""
    from npcface.cli import build_parser

    lines = [
        line.strip()
        for block in blocks("bash")
        for line in block.splitlines()
        if line.strip().startswith("npcface ")
    ]
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"README command does not parse ({exc.code}): {line}")


@pytest.fixture
def photos(lfw_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file names the README's snippets use, as real photos in a fresh working folder."""
    names = {
        "a.jpg": ("Colin_Powell", 1),
        "b.jpg": ("Colin_Powell", 2),
        "alice1.jpg": ("Jean_Chretien", 1),
        "alice2.jpg": ("Jean_Chretien", 2),
        "door.jpg": ("Jean_Chretien", 3),
    }
    for name, (person, n) in names.items():
        shutil.copy(lfw_image(lfw_dir, person, n), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_snippet_runs(index: int, photos: Path) -> None:
    code = blocks("python")[index]
    if code.startswith(SERVER_NEEDED):
        pytest.skip("needs a running server (the service's own tests drive the client)")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md python block {index + 1}", "exec"), {})
    printed = out.getvalue()
    if "verify(" in code:  # two photos of one man: the same person at both FARs
        first, second = printed.splitlines()[:2]
        assert first.startswith("True ") and second == "True"
    if "identify(" in code:  # door.jpg is a third photo of the enrolled "alice"
        assert "identity='alice'" in printed
