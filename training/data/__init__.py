"""Training data: aligned crops from folders, list files or RecordIO; synthetic smoke data;
a resumable distributed sampler; ``npcface train prepare`` (detect + align raw photos).

Every data set yields ``(image, label)`` with ``image`` an (S, S, 3) uint8 RGB tensor; the
trainer normalises a batch as the paper does: (x - 127.5) / 128.
"""

from __future__ import annotations

from ..config import DataConfig
from ..errors import ConfigError
from .base import FaceDataset, decode_image, is_hidden
from .check import ImageCheck, check_images
from .folder import FolderScan, ImageFolderDataset, ListDataset, scan_folder, write_list_file
from .recordio import RecordIODataset, RecordIOReader, RecordIOWriter, pack_record, unpack_record
from .sampler import EpochSampler
from .synthetic import SyntheticDataset

__all__ = [
    "EpochSampler",
    "FaceDataset",
    "FolderScan",
    "ImageCheck",
    "ImageFolderDataset",
    "ListDataset",
    "RecordIODataset",
    "RecordIOReader",
    "RecordIOWriter",
    "SyntheticDataset",
    "build_dataset",
    "check_images",
    "decode_image",
    "is_hidden",
    "pack_record",
    "scan_folder",
    "unpack_record",
    "write_list_file",
]


def build_dataset(
    cfg: DataConfig, size: int, seed: int = 0, cache: bool | None = None
) -> FaceDataset:
    """The data set a :class:`~npcface.training.config.DataConfig` describes.

    Args:
        cfg: the data section of a training config.
        size: crop side (the backbone's input size).
        seed: seed of the synthetic data set.
        cache: decode every image into RAM now (default: ``cfg.cache_in_memory``; the
            trainer caches after its image check instead).
    """
    if cfg.dataset in ("folder", "recordio") and not cfg.root:
        raise ConfigError(f"data.root is required for dataset {cfg.dataset!r}")
    if cfg.dataset == "list" and not cfg.list_file:
        raise ConfigError("data.list_file is required for dataset 'list'")
    if cfg.dataset == "synthetic":
        ds: FaceDataset = SyntheticDataset(
            cfg.synthetic_classes, cfg.synthetic_images, size, seed, cfg.flip_prob
        )
    elif cfg.dataset == "folder":
        ds = ImageFolderDataset(cfg.root, size, cfg.flip_prob)
    elif cfg.dataset == "list":
        ds = ListDataset(cfg.list_file, cfg.root or None, size, cfg.flip_prob)
    elif cfg.dataset == "recordio":
        ds = RecordIODataset(cfg.root, size, cfg.flip_prob)
    else:
        raise ConfigError(
            f"unknown data.dataset {cfg.dataset!r}; valid: synthetic, folder, list, recordio"
        )
    if cfg.cache_in_memory if cache is None else cache:
        ds.cache()
    return ds
