"""Aligned crops in folders: ``root/<identity>/<image>``, one sub-folder per identity."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from .base import IMAGE_EXTENSIONS, FaceDataset

__all__ = ["ImageFolderDataset", "ListDataset", "scan_folder"]

log = logging.getLogger(__name__)


def scan_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Images and labels of ``root/<identity>/*``: identities sorted by name, label = rank.

    Identity folders without images get no label (logged).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    paths: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    for ident in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in ident.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            log.info("skipping %s: no images", ident)
            continue
        label = len(classes)
        classes.append(ident.name)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"no images under {root}/<identity>/ (extensions {IMAGE_EXTENSIONS})")
    return paths, labels, classes


class _PathDataset(FaceDataset):
    paths: list[Path]

    def read(self, index: int) -> np.ndarray:
        path = self.paths[index]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {path}")
        return img


class ImageFolderDataset(_PathDataset):
    """``root/<identity>/<image>``; labels follow the sorted identity folder names.

    Args:
        root: folder of identity sub-folders (what ``npcface train prepare`` writes).
        size: crop side returned (crops of another size are resized).
        flip_prob: horizontal flip probability.
    """

    def __init__(self, root: str | Path, size: int = 120, flip_prob: float = 0.5) -> None:
        super().__init__(size, flip_prob)
        self.paths, labels, self.classes = scan_folder(root)
        self.labels = np.asarray(labels, dtype=np.int64)


class ListDataset(_PathDataset):
    """A list file of ``<path> <label>`` lines (tab or space separated; ``#`` comments).

    Args:
        list_file: the list; relative paths are resolved against ``root``.
        root: base folder of relative paths (default: the list file's folder).
        size: crop side returned.
        flip_prob: horizontal flip probability.
    """

    def __init__(
        self,
        list_file: str | Path,
        root: str | Path | None = None,
        size: int = 120,
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__(size, flip_prob)
        list_file = Path(list_file)
        if not list_file.is_file():
            raise DataError(f"list file not found: {list_file}")
        base = Path(root) if root else list_file.parent
        paths, labels = [], []
        for no, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path, _, label = line.rpartition(" ") if "\t" not in line else line.rpartition("\t")
            try:
                value = int(label)
            except ValueError:
                raise DataError(
                    f"{list_file}:{no}: expected '<path> <label>', got {line!r}"
                ) from None
            if not path.strip() or value < 0:
                raise DataError(f"{list_file}:{no}: expected '<path> <label>' with label >= 0")
            p = Path(path.strip())
            paths.append(p if p.is_absolute() else base / p)
            labels.append(value)
        if not paths:
            raise DataError(f"list file {list_file} has no entries")
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)


def write_list_file(path: str | Path, items: list[tuple[str | Path, int]]) -> None:
    """Write ``<path> <label>`` lines (the format :class:`ListDataset` reads)."""
    Path(path).write_text("".join(f"{p} {int(y)}\n" for p, y in items), encoding="utf-8")
