"""The data set contract shared by every source: aligned BGR crops in, RGB uint8 tensors out."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from npcface.image import IMAGE_SUFFIXES

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "FaceDataset", "decode_image"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the SDK's one list


def decode_image(data: bytes | np.ndarray, where: str = "image") -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 BGR array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode {where}")
    return img


class FaceDataset(Dataset):
    """Base class: aligned face crops with integer identity labels.

    Items are ``(image, label)``: ``image`` an (S, S, 3) uint8 **RGB** tensor (HWC; the
    trainer permutes a batch to NCHW, which is channels-last in memory for free, and
    normalises it), ``label`` an int. Indexing with ``(index, aug_seed)`` (what
    :class:`~npcface.training.data.sampler.EpochSampler` yields) applies the random
    horizontal flip drawn from ``aug_seed``, so augmentation depends only on the sampler's
    state (exact resume, same result with any number of workers). A plain ``int`` index
    gives the un-augmented crop.

    Subclasses set ``labels`` (int64 array) and implement :meth:`read`.

    Args:
        size: side S of the returned crops; crops of another size are resized (and a
            warning is logged once).
        flip_prob: probability of a horizontal flip (paper: 0.5).
    """

    labels: np.ndarray

    def __init__(self, size: int, flip_prob: float = 0.5) -> None:
        self.size, self.flip_prob = int(size), float(flip_prob)
        self._cache: np.ndarray | None = None
        self._warned_size = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def read(self, index: int) -> np.ndarray:
        """The stored crop ``index`` as (H, W, 3) uint8 BGR."""
        raise NotImplementedError

    def cache(self) -> FaceDataset:
        """Decode every crop once into one uint8 array (shared with forked workers)."""
        arr = np.empty((len(self), self.size, self.size, 3), np.uint8)
        for i in range(len(self)):
            arr[i] = self._sized(self.read(i))
        self._cache = arr
        return self

    def _sized(self, img: np.ndarray) -> np.ndarray:
        if img.shape[:2] != (self.size, self.size):
            if not self._warned_size:
                log.warning("resizing %s crops to %d px", img.shape[:2], self.size)
                self._warned_size = True
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return img

    def __getitem__(self, item: int | Sequence[int]) -> tuple[torch.Tensor, int]:
        if isinstance(item, int | np.integer):
            index, seed = int(item), None
        else:
            index, seed = int(item[0]), int(item[1])
        img = self._cache[index] if self._cache is not None else self._sized(self.read(index))
        img = img[:, :, ::-1]  # BGR -> RGB
        flip = seed is not None and self.flip_prob > 0
        if flip and np.random.default_rng(seed).random() < self.flip_prob:
            img = img[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)), int(self.labels[index])
