"""Checkpoints of the trainer: what a rank's file holds besides the model's parts (format,
RNG states), where the files live (``output/checkpoints/step_XXXXXXXX/rank{r}.pt``, the
``latest`` pointer, rotation), and which settings a resume may change
(:func:`config_changes`, :data:`RESUME_FIXED`). The trainer gathers its parts' states and
restores them; this module knows the files."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig, _deep_merge
from .errors import TrainingError

CHECKPOINT_FORMAT = 1

RESUME_FIXED = (
    "seed",
    "backbone.name",
    "backbone.input_size",
    "backbone.embedding_size",
    "backbone.kwargs",
    "head.name",
    "data.dataset",
    "data.root",
    "data.list_file",
    "data.synthetic_classes",
    "data.synthetic_images",
    "data.mean",
    "data.std",
    "optim.batch_size",
)
"""Settings a resume refuses to change (dotted keys and their sub-keys): they fix the
model's shape, the class centres, the data order or the sampler's position. Every other
setting may change on resume and is applied: the optimizer's lr, momentum and weight decay
and the scheduler's base lr, milestones, warm-up and length are set from the new config."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _known(key: str, defaults: dict[str, Any]) -> bool:
    """Is ``key`` (dotted) under a setting this version of :class:`TrainConfig` has?"""
    head, _, rest = key.partition(".")
    if head not in defaults:
        return False
    if isinstance(defaults[head], dict) and rest:  # a section: its field must exist
        return rest.partition(".")[0] in defaults[head]
    return True


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` of the settings that differ between two config dicts.

    ``old`` (a checkpoint's config) is completed with today's defaults first, so settings
    added since it was written do not count as changed, and settings since removed are
    ignored. A key only one side has (inside ``kwargs``/``params``) is paired with ``None``.
    """
    defaults = TrainConfig().to_dict()
    a, b = _flat(_deep_merge(defaults, old)), _flat(new)
    keys = sorted(k for k in set(a) | set(b) if _known(k, defaults))
    empty = (None, {})  # an empty kwargs/params mapping on one side, its keys on the other
    return {
        k: (a.get(k), b.get(k))
        for k in keys
        if a.get(k) != b.get(k) and not (a.get(k) in empty and b.get(k) in empty)
    }


def fixed_setting(key: str) -> bool:
    """Whether a resume may not change ``key`` (see :data:`RESUME_FIXED`)."""
    return any(key == f or key.startswith(f + ".") for f in RESUME_FIXED)


def rng_state() -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA) random states, weights_only-loadable."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` gave."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_folder(root: Path) -> Path | None:
    """The step folder ``root/latest`` names, if any."""
    latest = root / "latest"
    if not latest.is_file():
        return None
    folder = root / latest.read_text(encoding="utf-8").strip()
    return folder if folder.is_dir() else None


def mark_latest(root: Path, folder: Path, keep: int) -> None:
    """Point ``root/latest`` at ``folder``; keep the newest ``keep`` step folders up to it
    (``keep`` <= 0: all). Folders of later steps (left by an earlier run when resuming from
    an older checkpoint) are not touched."""
    (root / "latest").write_text(folder.name + "\n", encoding="utf-8")
    if keep > 0:
        ours = [d for d in root.glob("step_*") if d.name <= folder.name]
        for d in sorted(ours)[:-keep]:
            shutil.rmtree(d, ignore_errors=True)


def resolve(root: Path, resume: str | Path, rank: int) -> Path:
    """The rank file to resume from: ``"latest"`` (of ``root``), a run's checkpoints
    folder, a step folder, or a rank file (the same step's file of this rank).

    Raises:
        TrainingError: nothing there to resume from.
    """
    path = Path(resume)
    if str(resume) == "latest" or (path.is_dir() and (path / "latest").is_file()):
        base = root if str(resume) == "latest" else path
        latest = base / "latest"
        if not latest.is_file():
            raise TrainingError(f"no checkpoint to resume from in {base}")
        path = base / latest.read_text(encoding="utf-8").strip()
    if path.is_dir():
        path = path / f"rank{rank}.pt"
    elif path.name.startswith("rank") and rank != 0:
        path = path.parent / f"rank{rank}.pt"
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    return path
