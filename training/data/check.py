"""Decode every training image once, before training: bad files are named up front.

A run that meets an empty, truncated or non-image file halfway through stops with the
file's name buried in a worker traceback, or (with a lenient decoder) trains on a half-grey
crop. :func:`check_images` reads every item of a data set with the SDK's strict decoder
(:func:`npcface.image.load_image`, through the data set's own ``read``), in the data
loader's worker processes, and returns the items that fail, by name and reason. The
result is recorded next to the run (``data_check.json``) with the data set's fingerprint
(paths, sizes, modification times), so a resumed or repeated run over unchanged files
does not decode them again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .base import FaceDataset

__all__ = ["ImageCheck", "check_images"]

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of :func:`check_images`.

    Attributes:
        checked: items decoded (or covered by the reused record).
        bad: ``(index, name, reason)`` of every item that cannot be decoded (the reason
            names the item too).
        fingerprint: the data set's fingerprint the result belongs to.
        reused: True when the result came from an earlier check's record.
        seconds: time the check took.
    """

    checked: int
    bad: tuple[tuple[int, str, str], ...]
    fingerprint: str
    reused: bool = False
    seconds: float = 0.0

    @property
    def indices(self) -> list[int]:
        return [i for i, _, _ in self.bad]

    def notes(self, limit: int = 5) -> list[str]:
        """One line per bad item (at most ``limit``, then a count); empty when none."""
        if not self.bad:
            return []
        lines = [
            f"left out {len(self.bad)} unreadable image(s) of {self.checked} (checked "
            "before training with the strict decoder):"
        ]
        lines += [f"  {reason}" for _, _, reason in self.bad[:limit]]  # names the item
        if len(self.bad) > limit:
            lines.append(f"  ... and {len(self.bad) - limit} more (see data_check.json)")
        return lines

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "fingerprint": self.fingerprint,
            "checked": self.checked,
            "bad": [list(b) for b in self.bad],
        }


class _Probe(Dataset):
    def __init__(self, ds: FaceDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[int, str]:
        try:
            self.ds.read(index)
        except DataError as exc:
            return index, str(exc)
        except (OSError, ValueError) as exc:  # a reader's own error: still name the item
            return index, f"cannot read {self.ds.describe(index)}: {exc}"
        return index, ""


def _reuse(record: Path | None, fingerprint: str, n: int) -> ImageCheck | None:
    if record is None or not record.is_file():
        return None
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
        if doc.get("format") != _FORMAT or doc.get("fingerprint") != fingerprint:
            return None
        if int(doc["checked"]) != n:
            return None
        bad = tuple((int(i), str(name), str(why)) for i, name, why in doc["bad"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ImageCheck(checked=n, bad=bad, fingerprint=fingerprint, reused=True)


def check_images(
    ds: FaceDataset, workers: int = 0, record: str | Path | None = None
) -> ImageCheck | None:
    """Decode every item of ``ds`` once; return the ones that fail.

    Args:
        ds: the data set (its ``read`` decodes strictly; see
            :func:`~npcface.training.data.base.decode_image`).
        workers: loader worker processes (0 = this process).
        record: JSON file to reuse a matching earlier result from and to write this one to.

    Returns:
        The :class:`ImageCheck`, or None when ``ds`` reads no files (synthetic data).
    """
    fingerprint = ds.fingerprint()
    if fingerprint is None:
        return None
    record = Path(record) if record else None
    n = len(ds)
    reused = _reuse(record, fingerprint, n)
    if reused is not None:
        log.info("image check of %d items reused from %s", n, record)
        return reused
    t0 = time.perf_counter()
    loader = DataLoader(
        _Probe(ds),
        batch_size=64,
        num_workers=workers,
        collate_fn=list,
    )
    bad = []
    for batch in loader:
        bad += [(i, ds.describe(i), why) for i, why in batch if why]
    result = ImageCheck(
        checked=n, bad=tuple(bad), fingerprint=fingerprint, seconds=time.perf_counter() - t0
    )
    log.info("checked %d images in %.1f s: %d unreadable", n, result.seconds, len(bad))
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
        tmp.replace(record)
    return result
