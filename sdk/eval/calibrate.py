"""Calibrate a recogniser's cosine thresholds at stated false-accept rates, and store them in
the model's ONNX metadata (``npcface calibrate MODEL --data DIR``).

Protocol: every image of a folder of identities (``DIR/<identity>/<image>``, or
``DIR/images/<identity>/<image>`` as LFW lays it out) is embedded through the full
pipeline; then every pair of images is scored: on LFW about 242k genuine pairs (same
person) and 87M impostor pairs. For each FAR the threshold is the smallest one at which at
most ``floor(FAR * impostors)`` impostor pairs are accepted (decision
``similarity >= threshold``); ``default`` is the one at FAR 1e-3. LFW's pairs.txt alone has
3,000 impostor pairs, too few for FAR below 1e-3.

A FAR needs at least :data:`MIN_FALSE_ACCEPTS` / FAR impostor pairs (at least 10 impostors
above its threshold): below that the threshold rests on a handful of pairs, so such FARs
are left out and reported as unsupported, and a calibration that cannot support the
default FAR 1e-3 (10,000 impostor pairs: about 150 images of several people) is refused.
Embedding is most of the time (about 0.1 s per image on 2 CPU cores: 13,233 LFW images take
20-30 minutes); ``limit`` takes a random sample of the images instead.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, ModelError

log = logging.getLogger(__name__)

FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FAR = 1e-3
MIN_FALSE_ACCEPTS = 10
"""Impostor pairs a FAR must expect to accept at its threshold to be calibrated: FAR f needs
at least ``MIN_FALSE_ACCEPTS / f`` impostor pairs."""
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass(frozen=True)
class Calibration:
    """Thresholds at stated FARs and how they were obtained.

    Attributes:
        thresholds: ``{"far=0.001": t, ..., "default": t}`` cosine thresholds.
        tar: true-accept rate at each ``far=`` threshold, on the same data.
        images: images used (all listed, or the sample); failed: images without a usable
            face (left out).
        genuine, impostor: numbers of pairs scored.
        source: one line on protocol, pipeline and date, stored with the thresholds.
        unsupported: ``{"far=1e-06": why}`` for the FARs asked for that too few impostor
            pairs support (see :data:`MIN_FALSE_ACCEPTS`): no threshold is given for them.
    """

    thresholds: dict[str, float]
    tar: dict[str, float]
    images: int
    failed: int
    genuine: int
    impostor: int
    source: str
    unsupported: dict[str, str] = field(default_factory=dict)


def identity_images(data: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(image, identity) of every image in ``data/<identity>/`` (or ``data/images/<identity>/``).

    Raises:
        InvalidArgumentError: the folder has no identity sub-folders with images.
    """
    root = Path(data)
    if (root / "images").is_dir():
        root = root / "images"
    if not root.is_dir():
        raise InvalidArgumentError(f"{data}: not a folder of identity folders")
    out = [
        (p, d.name)
        for d in sorted(root.iterdir())
        if d.is_dir()
        for p in sorted(d.iterdir())
        if p.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if not out:
        raise InvalidArgumentError(f"{data}: no images in identity sub-folders")
    return out


def pair_scores_by_label(
    embeddings: np.ndarray, ids: np.ndarray, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of all unordered pairs of rows, split into (genuine, impostor) by ``ids``."""
    n = len(embeddings)
    gen, imp = [], []
    for start in range(0, n, block):
        sims = embeddings[start : start + block] @ embeddings.T
        rows = np.arange(start, min(start + block, n))
        upper = np.arange(n)[None, :] > rows[:, None]
        same = ids[rows][:, None] == ids[None, :]
        gen.append(sims[upper & same])
        imp.append(sims[upper & ~same])
    return np.concatenate(gen), np.concatenate(imp)


def thresholds_at_fars(
    genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float] = FARS
) -> tuple[dict[str, float], dict[str, float]]:
    """For each FAR, the smallest threshold accepting at most ``floor(FAR * n)`` impostors.

    Returns:
        ``(thresholds, tar)`` keyed ``"far=<g>"``; thresholds also hold ``"default"`` (FAR 1e-3
        when it is among ``fars``, else the first).

    Raises:
        InvalidArgumentError: no impostor or genuine scores, or a FAR outside (0, 1).
    """
    if len(impostor) == 0 or len(genuine) == 0:
        raise InvalidArgumentError("calibration needs genuine and impostor pairs (>= 2 people)")
    imp = np.asarray(impostor, np.float32)
    thresholds: dict[str, float] = {}
    tar: dict[str, float] = {}
    for far in fars:
        if not 0.0 < far < 1.0:
            raise InvalidArgumentError(f"FAR must be in (0, 1), got {far}")
        k = int(np.floor(far * len(imp)))  # at most k impostors may be accepted
        kth = np.partition(imp, len(imp) - k - 1)[len(imp) - k - 1]  # (k+1)-th largest
        thr = float(np.nextafter(kth, np.float32(np.inf)))
        key = f"far={far:g}"
        thresholds[key] = thr
        tar[key] = float((genuine >= thr).mean())
    default = f"far={DEFAULT_FAR:g}" if DEFAULT_FAR in fars else f"far={fars[0]:g}"
    thresholds["default"] = thresholds[default]
    return thresholds, tar


def calibrate(
    recognizer: Any,
    data: str | os.PathLike[str],
    fars: Sequence[float] = FARS,
    progress: bool = True,
    limit: int | None = None,
    seed: int = 0,
    on_estimate: Callable[[int, float], None] | None = None,
) -> Calibration:
    """Embed the images of ``data`` with ``recognizer`` and calibrate thresholds on all pairs.

    Args:
        recognizer: a :class:`~npcface.FaceRecognizer` (its preset, policy and flip are used).
        data: a folder of identity folders (LFW's ``images/`` or its parent).
        fars: false-accept rates to calibrate; those the impostor pairs cannot support
            (fewer than ``MIN_FALSE_ACCEPTS / FAR``) are left out and listed in
            ``unsupported``.
        progress: show a progress bar.
        limit: embed a random sample of at most this many images (all when None).
        seed: the sample's random seed.
        on_estimate: called once, after the first batch, with (images to embed, estimated
            seconds for all of them).

    Raises:
        InvalidArgumentError: ``limit`` below 2, or too few impostor pairs for the default
            FAR (fewer than ``MIN_FALSE_ACCEPTS / DEFAULT_FAR``).
    """
    from .lfw import embed_paths

    items = identity_images(data)
    listed = len(items)
    if limit is not None:
        if limit < 2:
            raise InvalidArgumentError(f"limit must be at least 2 images, got {limit}")
        if limit < listed:
            pick = np.random.default_rng(seed).choice(listed, size=limit, replace=False)
            items = [items[i] for i in sorted(pick)]
    told = False

    def estimate(done: int, seconds: float) -> None:
        nonlocal told
        if on_estimate is not None and not told:
            told = True
            on_estimate(len(items), seconds / done * len(items))

    table = embed_paths(recognizer, [p for p, _ in items], progress=progress, on_batch=estimate)
    keep = np.array([p not in table.failed for p in table.paths])
    _, ids = np.unique(np.array([i for _, i in items])[keep], return_inverse=True)
    gen, imp = pair_scores_by_label(table.embeddings[keep], ids)
    supported, unsupported = supported_fars(fars, len(imp))
    default_far = DEFAULT_FAR if DEFAULT_FAR in fars else fars[0]
    if default_far not in supported:
        raise InvalidArgumentError(
            f"{len(imp):,} impostor pairs cannot support the default FAR {default_far:g} "
            f"(it needs {MIN_FALSE_ACCEPTS / default_far:,.0f}): calibrate on more images of "
            "more people"
        )
    thresholds, tar = thresholds_at_fars(gen, imp, supported)
    thresholds["default"] = thresholds[f"far={default_far:g}"]
    det = recognizer.detector
    which = (
        f"all {len(items)}" if len(items) == listed else f"a sample (seed {seed}) of {len(items)}"
    )
    source = (
        f"{Path(data).name}: all {len(gen):,} genuine and {len(imp):,} impostor image pairs of "
        f"{int(keep.sum())} images ({which} of {listed} listed; {len(table.failed)} without a "
        f"face left out); pipeline "
        f"{getattr(det, 'name', type(det).__name__)} + policy {recognizer.face_policy} + "
        f"flip={recognizer.flip}; default = threshold at FAR {default_far:g}; "
        + (
            f"not calibrated (too few impostor pairs): {', '.join(unsupported)}; "
            if unsupported
            else ""
        )
        + f"npcface calibrate, {datetime.date.today().isoformat()}"
    )
    return Calibration(
        thresholds=thresholds,  # exact: rounding down would accept more impostors than FAR
        tar=tar,
        images=len(items),
        failed=len(table.failed),
        genuine=len(gen),
        impostor=len(imp),
        source=source,
        unsupported=unsupported,
    )


def supported_fars(
    fars: Sequence[float], impostor_pairs: int
) -> tuple[list[float], dict[str, str]]:
    """Split ``fars`` into those ``impostor_pairs`` support (at least
    :data:`MIN_FALSE_ACCEPTS` / FAR pairs) and ``{"far=<g>": why}`` for the others."""
    supported: list[float] = []
    unsupported: dict[str, str] = {}
    for far in fars:
        need = MIN_FALSE_ACCEPTS / far
        if impostor_pairs >= need * (1 - 1e-9):
            supported.append(far)
        else:
            unsupported[f"far={far:g}"] = (
                f"needs {need:,.0f} impostor pairs, {impostor_pairs:,} here"
            )
    return supported, unsupported


def write_thresholds(
    model: str | os.PathLike[str],
    calibration: Calibration,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Store ``calibration``'s thresholds in an npcface ONNX file's metadata.

    Args:
        model: an ``.onnx`` file exported by npcface (it carries npcface metadata).
        calibration: the thresholds to store (they replace any there).
        out: write here (a copy); default: rewrite ``model`` in place.

    Returns:
        The path written.

    Raises:
        ModelError: the file is not ONNX or carries no npcface metadata.
    """
    import onnx

    from ..modelinfo import read_onnx_info, write_onnx_info

    src = Path(model)
    if src.suffix != ".onnx" or not src.is_file():
        raise ModelError(
            f"{model}: thresholds can be stored in an npcface .onnx file only; for a registry "
            "model, put the printed entry in npcface/calibration.py"
        )
    info = read_onnx_info(str(src))
    if info is None:
        raise ModelError(f"{model} carries no npcface metadata; export it with npcface export")
    dst = Path(out) if out is not None else src
    proto = onnx.load(str(src), load_external_data=False)
    write_onnx_info(
        proto,
        replace(info, thresholds=dict(calibration.thresholds), threshold_source=calibration.source),
    )
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(proto, str(tmp))
    if src.with_suffix(".onnx.data").exists() and dst != src:  # external weights travel along
        shutil.copy2(src.with_suffix(".onnx.data"), dst.with_suffix(".onnx.data"))
    os.replace(tmp, dst)
    return dst
