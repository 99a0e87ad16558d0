"""Synthetic faces: class-coloured noise images, no files needed (smoke runs and tests)."""

from __future__ import annotations

import cv2
import numpy as np

from .base import FaceDataset

__all__ = ["SyntheticDataset"]


class SyntheticDataset(FaceDataset):
    """``num_images`` images of ``num_classes`` classes (label = index mod classes).

    Each class has a fixed low-frequency colour pattern; each image adds its own noise, so
    the task is learnable but not trivial. Images are generated deterministically from
    ``(seed, index)`` on the fly.

    Args:
        num_classes: number of identities.
        num_images: data set length.
        size: crop side.
        seed: generator seed.
        flip_prob: horizontal flip probability.
    """

    def __init__(
        self,
        num_classes: int = 64,
        num_images: int = 1024,
        size: int = 120,
        seed: int = 0,
        flip_prob: float = 0.5,
    ) -> None:
        super().__init__(size, flip_prob)
        self.seed = int(seed)
        self.labels = np.arange(num_images, dtype=np.int64) % num_classes

    def read(self, index: int) -> np.ndarray:
        label = int(self.labels[index])
        base = np.random.default_rng((self.seed, 1, label)).integers(0, 256, (4, 4, 3))
        img = cv2.resize(
            base.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_LINEAR
        )
        noise = np.random.default_rng((self.seed, 2, index)).normal(0, 40, img.shape)
        return np.clip(img + noise, 0, 255).astype(np.uint8)
