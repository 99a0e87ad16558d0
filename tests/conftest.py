"""Shared fixtures. Real data comes from NPCFACE_DATA (default ../shared/data next to the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("NPCFACE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared face data not found at {root} (set NPCFACE_DATA)")
    return root


@pytest.fixture(scope="session")
def lfw_dir(data_dir: Path) -> Path:
    lfw = data_dir / "lfw"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip(f"LFW not found at {lfw} (set NPCFACE_DATA)")
    return lfw


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Prepared models and autotune results go to a fresh cache for the test session."""
    if "NPCFACE_TEST_KEEP_HOME" not in os.environ:
        os.environ["NPCFACE_HOME"] = str(tmp_path_factory.mktemp("npcface_home"))


@pytest.fixture(scope="session")
def recognizer():
    """The default pipeline (YuNet + SFace), loaded once."""
    from npcface import FaceRecognizer

    return FaceRecognizer()


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread: on a shared 2-core machine OpenMP spin-waits stall badly."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lfw_image(lfw: Path, name: str, n: int) -> Path:
    return lfw / "images" / name / f"{name}_{n:04d}.jpg"
