"""Verification pair lists: the LFW protocol files and a generic CSV format.

A pair list says which two images to compare, whether they show the same person, and which
cross-validation fold the pair belongs to. Readers only parse; they never open the images.

LFW: Huang et al., "Labeled Faces in the Wild", UMass TR 07-49, 2007,
http://vis-www.cs.umass.edu/lfw/ (View 1 = ``pairsDevTrain.txt``/``pairsDevTest.txt``,
View 2 = ``pairs.txt``, 10 folds of 300 matched + 300 mismatched pairs).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from npcface.errors import NpcfaceError

logger = logging.getLogger(__name__)

_SAME_WORDS = frozenset({"1", "same", "true"})
_DIFF_WORDS = frozenset({"0", "diff", "different", "false"})


class PairsFormatError(NpcfaceError, ValueError):
    """A pairs file is malformed; the message names the file and the line number."""


@dataclass(frozen=True)
class Pair:
    """One verification pair.

    Attributes:
        path1: first image.
        path2: second image.
        same: True if both images show the same identity (a genuine / matched pair).
        fold: cross-validation fold id, from 0 (LFW View 2: 0..9; single-fold files: 0).
    """

    path1: Path
    path2: Path
    same: bool
    fold: int


def lfw_image_path(lfw_dir: str | Path, name: str, number: int) -> Path:
    """Path of one LFW image: ``<lfw_dir>/images/<name>/<name>_<NNNN>.jpg``.

    Args:
        lfw_dir: LFW root folder (the one holding ``pairs.txt`` and ``images/``).
        name: identity folder name, e.g. ``"Abel_Pacheco"``.
        number: 1-based image number of that identity.

    Returns:
        The image path (not checked for existence).
    """
    return Path(lfw_dir) / "images" / name / f"{name}_{number:04d}.jpg"


def _positive_int(token: str, file: Path, line_no: int, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise PairsFormatError(
            f"{file}:{line_no}: {what} must be an integer, got {token!r}"
        ) from None
    if value < 1:
        raise PairsFormatError(f"{file}:{line_no}: {what} must be >= 1, got {value}")
    return value


def read_lfw_pairs(lfw_dir: str | Path, pairs_file: str | Path = "pairs.txt") -> list[Pair]:
    """Read an LFW protocol pairs file.

    Two header forms are understood:

    * View 2 (``pairs.txt``): first line ``"<folds> <n>"`` (``"10 300"``); then for each fold
      ``n`` matched lines ``name i j`` followed by ``n`` mismatched lines
      ``name1 i name2 j``. Pairs get fold ids ``0..folds-1``.
    * View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``): first line ``"<n>"``; then ``n``
      matched lines followed by ``n`` mismatched lines, all in fold 0.

    Fields may be separated by tabs or spaces; blank lines are ignored.

    Args:
        lfw_dir: LFW root folder; images are expected at
            ``<lfw_dir>/images/<name>/<name>_<NNNN>.jpg`` (4-digit zero-padded number).
        pairs_file: pairs file name relative to ``lfw_dir`` (or an absolute path).

    Returns:
        The pairs in file order.

    Raises:
        FileNotFoundError: the pairs file does not exist.
        PairsFormatError: a line does not match the expected layout (message names the
            file and the 1-based line number).
    """
    lfw_dir = Path(lfw_dir)
    file = lfw_dir / pairs_file
    if not file.is_file():
        raise FileNotFoundError(
            f"LFW pairs file not found: {file} (point lfw_dir at the folder holding "
            f"'{pairs_file}' and 'images/')"
        )
    lines = [
        (no, line.split())
        for no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise PairsFormatError(f"{file}: empty pairs file")

    header_no, header = lines[0]
    if len(header) == 2:
        num_folds = _positive_int(header[0], file, header_no, "number of folds")
        per_class = _positive_int(header[1], file, header_no, "pairs per class")
    elif len(header) == 1:
        num_folds = 1
        per_class = _positive_int(header[0], file, header_no, "number of matched pairs")
    else:
        raise PairsFormatError(
            f"{file}:{header_no}: header must be '<folds> <pairs per class>' or "
            f"'<matched pairs>', got {' '.join(header)!r}"
        )

    body = lines[1:]
    expected = num_folds * 2 * per_class
    if len(body) != expected:
        raise PairsFormatError(
            f"{file}: header (line {header_no}) announces {num_folds} fold(s) x 2 x "
            f"{per_class} = {expected} pair lines, found {len(body)}"
        )

    pairs: list[Pair] = []
    for index, (no, fields) in enumerate(body):
        fold, within = divmod(index, 2 * per_class)
        same = within < per_class
        if same:
            if len(fields) != 3:
                raise PairsFormatError(
                    f"{file}:{no}: expected a matched pair 'name n1 n2' "
                    f"(fold {fold}), got {len(fields)} field(s): {' '.join(fields)!r}"
                )
            name1, name2 = fields[0], fields[0]
            n1 = _positive_int(fields[1], file, no, "image number")
            n2 = _positive_int(fields[2], file, no, "image number")
        else:
            if len(fields) != 4:
                raise PairsFormatError(
                    f"{file}:{no}: expected a mismatched pair 'name1 n1 name2 n2' "
                    f"(fold {fold}), got {len(fields)} field(s): {' '.join(fields)!r}"
                )
            name1, name2 = fields[0], fields[2]
            n1 = _positive_int(fields[1], file, no, "image number")
            n2 = _positive_int(fields[3], file, no, "image number")
        pairs.append(
            Pair(
                path1=lfw_image_path(lfw_dir, name1, n1),
                path2=lfw_image_path(lfw_dir, name2, n2),
                same=same,
                fold=fold,
            )
        )
    logger.debug("read %d pairs in %d fold(s) from %s", len(pairs), num_folds, file)
    return pairs


def _parse_label(token: str) -> bool | None:
    word = token.strip().lower()
    if word in _SAME_WORDS:
        return True
    if word in _DIFF_WORDS:
        return False
    return None


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_pairs_csv(path: str | Path, root: str | Path | None = None) -> list[Pair]:
    """Read a generic comma-separated pairs file.

    Each data row is ``path1,path2,label`` or ``path1,path2,label,fold``:

    * ``label``: ``1``/``same``/``true`` for a genuine pair, ``0``/``diff``/``different``/
      ``false`` for an impostor pair (case-insensitive).
    * ``fold``: optional integer fold id >= 0; either every row has it or none does (then all
      pairs are in fold 0).

    The first row is taken as a header when its label field is neither a label nor a number
    (e.g. ``path1,path2,label``). Blank lines and lines starting with ``#`` are skipped.
    Standard CSV quoting is honoured, so paths may contain commas when quoted.

    Args:
        path: the CSV file.
        root: folder that relative image paths are relative to; default the CSV's folder.
            Absolute paths in the file are kept as they are.

    Returns:
        The pairs in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        PairsFormatError: a row is malformed (message names the file and the line number).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pairs file not found: {file}")
    base = Path(root) if root is not None else file.parent

    pairs: list[Pair] = []
    has_fold: bool | None = None
    first_row = True
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for row in reader:
            no = reader.line_num
            fields = [field.strip() for field in row]
            if not fields or not any(fields) or fields[0].startswith("#"):
                continue
            is_first, first_row = first_row, False
            if len(fields) not in (3, 4):
                raise PairsFormatError(
                    f"{file}:{no}: expected 'path1,path2,label[,fold]', got {len(fields)} "
                    f"field(s): {','.join(fields)!r}"
                )
            same = _parse_label(fields[2])
            if same is None:
                if is_first and not _looks_numeric(fields[2]):
                    logger.debug("%s:%d: treating %r as a header", file, no, ",".join(fields))
                    continue
                raise PairsFormatError(
                    f"{file}:{no}: label must be 1/0 or same/diff, got {fields[2]!r}"
                )
            row_has_fold = len(fields) == 4
            if has_fold is None:
                has_fold = row_has_fold
            elif has_fold != row_has_fold:
                raise PairsFormatError(
                    f"{file}:{no}: the fold column must be present on every row or on none"
                )
            fold = 0
            if row_has_fold:
                try:
                    fold = int(fields[3])
                except ValueError:
                    fold = -1
                if fold < 0:
                    raise PairsFormatError(
                        f"{file}:{no}: fold must be an integer >= 0, got {fields[3]!r}"
                    )
            if not fields[0] or not fields[1]:
                raise PairsFormatError(f"{file}:{no}: empty image path")
            pairs.append(Pair(path1=base / fields[0], path2=base / fields[1], same=same, fold=fold))
    logger.debug("read %d pairs from %s", len(pairs), file)
    return pairs
