"""Real aligned face crops for parity checks and INT8 calibration, and model-side preprocessing.

Crops are made exactly as the SDK makes them at inference time: the SDK's one pipeline
built from a :class:`~npcface.config.RecognizerConfig` (by default the inference default:
the ``accurate`` preset's detector and face policy), aligned at the model's input size.
Images that already are ``size`` x ``size`` are taken as aligned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import NpcfaceError
from npcface.image import IMAGE_SUFFIXES
from npcface.modelinfo import RecognizerInfo

log = logging.getLogger(__name__)


def preprocess_crops(crops: np.ndarray, info: RecognizerInfo) -> np.ndarray:
    """(N, S, S, 3) uint8 BGR crops -> (N, 3, S, S) float32 as ``info`` prescribes: the
    SDK's one preprocessing (:func:`npcface.embed.preprocess`), for feeding a reference
    (torch, or a third-party ONNX file) without an embedder."""
    from npcface.embed import preprocess

    return preprocess(crops, info)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted; hidden files and anything under a
    hidden folder (``.ipynb_checkpoints``, macOS ``._photo.jpg`` resource files) left out."""
    root = Path(folder)
    if not root.is_dir():
        raise NpcfaceError(f"image folder {root} does not exist")
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(
            part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts
        )
    )


def spread(items: Sequence[Path], limit: int | None) -> list[Path]:
    """``limit`` items spread evenly over ``items`` (all when ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, num=limit).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def aligned_crops(
    images: Sequence[str | os.PathLike[str]],
    size: int,
    config: Any = None,
    progress: bool = False,
    *,
    detector: object | None = None,
) -> tuple[np.ndarray, list[Path]]:
    """Detect the face of each image the configuration's policy picks and align it to
    ``size`` x ``size``, through the SDK's one pipeline
    (:meth:`npcface.FaceRecognizer.crop_many`).

    Args:
        images: image files. Files already ``size`` x ``size`` are used as they are.
        size: crop side S (the model's input size).
        config: the pipeline (:class:`~npcface.config.RecognizerConfig`); default the
            inference default.
        progress: show a tqdm bar.
        detector: a detector object to use instead of the configuration's detector.

    Returns:
        ``(crops, used)``: (N, S, S, 3) uint8 BGR crops and the files they came from
        (images without a face are skipped and logged).
    """
    from tqdm import tqdm

    from npcface.image import load_image

    paths = [Path(p) for p in images]
    rec = pipeline(config, detector)
    shown = tqdm(paths, desc="aligning", unit="img", disable=not progress)
    # decoded here so that files of exactly S x S x 3 pass through as aligned crops
    results = rec.crop_many(
        (load_image(p) for p in shown),
        size=size,
        names=[str(p) for p in paths],
        aligned_arrays=True,
    )
    crops: list[np.ndarray] = []
    used: list[Path] = []
    for r in results:
        if r.ok:
            crops.append(r.crop)
            used.append(paths[r.index])
        else:
            log.info("%s; skipped", r.error)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), used
    return np.stack(crops), used


def crops_from_folder(
    folder: str | os.PathLike[str],
    size: int,
    limit: int | None = 64,
    config: Any = None,
    progress: bool = False,
) -> np.ndarray:
    """Up to ``limit`` aligned crops from the images under ``folder`` (spread over the folder;
    ``progress``: a tqdm bar).

    Raises:
        NpcfaceError: the folder holds no image with a detectable face.
    """
    files = list_images(folder)
    crops, _ = aligned_crops(spread(files, limit), size, config, progress=progress)
    if len(crops) == 0:
        raise NpcfaceError(
            f"no usable face in {folder} ({len(files)} image files); point it at face photos "
            "or at aligned crops of the model's input size"
        )
    log.info("%d aligned %dx%d crops from %s", len(crops), size, size, folder)
    return crops


def pipeline(config: Any = None, detector: object | None = None) -> Any:
    """The :class:`~npcface.FaceRecognizer` of ``config`` (default: the inference default),
    with ``detector`` (an object) instead of the configuration's when given."""
    from npcface import FaceRecognizer
    from npcface.config import RecognizerConfig

    config = (config or RecognizerConfig()).resolved()
    if detector is None:
        return FaceRecognizer.from_config(config)
    return FaceRecognizer(
        detector=detector,
        face_policy=config.face_policy,
        flip=config.flip,
        recognizer=config.recognizer,
        preset=config.preset,
    )


def default_face_folder() -> Path | None:
    """LFW images in the shared data folder, when present.

    ``$NPCFACE_DATA/lfw/images`` if ``NPCFACE_DATA`` is set, else ``../shared/data/lfw/images``
    relative to the working directory.
    """
    root = Path(os.environ.get("NPCFACE_DATA", "../shared/data"))
    folder = root / "lfw" / "images"
    return folder if folder.is_dir() else None
