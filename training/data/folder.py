"""Aligned crops in folders: ``root/<identity>/<image>``, one sub-folder per identity."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import IMAGE_EXTENSIONS, FaceDataset, is_hidden, read_image_file

__all__ = ["FolderScan", "ImageFolderDataset", "ListDataset", "scan_folder"]

log = logging.getLogger(__name__)


def _shown(items: list[str] | tuple[str, ...], limit: int = 5) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_folder` found and what it left out.

    Attributes:
        root: the scanned folder.
        paths: image files, identity by identity (identities sorted by name).
        labels: label of each path (the rank of its identity among the kept identities).
        classes: identity folder names, index = label.
        hidden: hidden entries left out, relative to ``root`` (``.ipynb_checkpoints/``,
            ``Alice/._photo.jpg``, ``.DS_Store``; see :func:`~npcface.training.data.base.is_hidden`).
        empty: identity folders without any image (they get no label).
        other: entries of identity folders that are not image files (other files,
            sub-folders). Files beside the identity folders (manifests, lists) are not
            listed.
    """

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]
    hidden: tuple[str, ...] = field(default=())
    empty: tuple[str, ...] = field(default=())
    other: tuple[str, ...] = field(default=())

    def notes(self) -> list[str]:
        """One line per kind of entry left out (empty when nothing was)."""
        out = []
        if self.hidden:
            out.append(
                f"{self.root}: left out {len(self.hidden)} hidden file(s)/folder(s): "
                f"{_shown(self.hidden)}"
            )
        if self.empty:
            out.append(
                f"{self.root}: left out {len(self.empty)} identity folder(s) without "
                f"images: {_shown(self.empty)}"
            )
        if self.other:
            out.append(
                f"{self.root}: left out {len(self.other)} entries that are not images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}): {_shown(self.other)}"
            )
        return out


def scan_folder(root: str | Path) -> FolderScan:
    """Images and labels of ``root/<identity>/*``: identities sorted by name, label = rank.

    Hidden files and folders (dot-names, ``__MACOSX``) are left out at both levels, as are
    identity folders without images; the returned :class:`FolderScan` lists them all (and
    logs one warning line per kind).

    Raises:
        DataError: ``root`` is not a folder, or holds no image in any identity folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    paths: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    hidden: list[str] = []
    empty: list[str] = []
    other: list[str] = []
    for entry in sorted(root.iterdir()):
        if is_hidden(entry.name):
            hidden.append(entry.name + ("/" if entry.is_dir() else ""))
            continue
        if not entry.is_dir():
            log.debug("%s: not an identity folder, skipped", entry)  # manifests, lists
            continue
        files = []
        for f in sorted(entry.iterdir()):
            rel = f"{entry.name}/{f.name}"
            if is_hidden(f.name):
                hidden.append(rel + ("/" if f.is_dir() else ""))
            elif f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(f)
            else:
                other.append(rel + ("/" if f.is_dir() else ""))
        if not files:
            empty.append(entry.name)
            continue
        label = len(classes)
        classes.append(entry.name)
        paths += files
        labels += [label] * len(files)
    scan = FolderScan(root, paths, labels, classes, tuple(hidden), tuple(empty), tuple(other))
    for line in scan.notes():
        log.warning("%s", line)
    if not paths:
        raise DataError(f"no images under {root}/<identity>/ (extensions {IMAGE_EXTENSIONS})")
    return scan


def _files_fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()


class _PathDataset(FaceDataset):
    paths: list[Path]

    def read(self, index: int) -> np.ndarray:
        return read_image_file(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def fingerprint(self) -> str | None:
        return _files_fingerprint(self.paths)

    def _select(self, keep: np.ndarray) -> None:
        self.paths = [p for p, k in zip(self.paths, keep.tolist(), strict=True) if k]
        self.labels = self.labels[keep]


class ImageFolderDataset(_PathDataset):
    """``root/<identity>/<image>``; labels follow the sorted identity folder names.

    Hidden files and folders and identity folders without images are left out and listed
    in ``scan`` and ``notes``. Identities whose every image turns out unreadable (see
    :meth:`drop`) are left out too and the labels renumbered.

    Args:
        root: folder of identity sub-folders (what ``npcface train prepare`` writes).
        size: crop side returned (crops of another size are resized).
        flip_prob: horizontal flip probability.
    """

    def __init__(self, root: str | Path, size: int = 120, flip_prob: float = 0.5) -> None:
        super().__init__(size, flip_prob)
        self.scan = scan_folder(root)
        self.paths, self.classes = list(self.scan.paths), list(self.scan.classes)
        self.labels = np.asarray(self.scan.labels, dtype=np.int64)
        self.notes += self.scan.notes()

    def _select(self, keep: np.ndarray) -> None:
        super()._select(keep)
        used, self.labels = np.unique(self.labels, return_inverse=True)
        self.labels = self.labels.astype(np.int64)
        gone = sorted(set(self.classes) - {self.classes[i] for i in used.tolist()})
        if gone:
            line = (
                f"{self.scan.root}: left out {len(gone)} identity folder(s) whose every "
                f"image is unreadable: {_shown(gone)}"
            )
            self.notes.append(line)
            log.warning("%s", line)
        self.classes = [self.classes[i] for i in used.tolist()]


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
