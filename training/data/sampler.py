"""A resumable, distributed, epoch-seeded sampler that also hands out augmentation seeds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, aug_seed)`` for this rank, in an order fixed by ``(seed, epoch)``.

    Like ``DistributedSampler`` (call :meth:`set_epoch` before each epoch): the epoch's
    permutation is drawn from ``seed`` and ``epoch`` only, truncated to a multiple of the
    number of replicas (``drop_last``) and dealt round-robin. Each position also gets an
    augmentation seed from the same generator, so a sample's flip does not depend on which
    worker loads it. :meth:`state_dict` / :meth:`load_state_dict` hold ``(epoch, start)``:
    resuming mid-epoch skips the ``start`` samples this rank already consumed.

    Args:
        length: data set length.
        num_replicas: number of processes.
        rank: this process.
        shuffle: permute each epoch (else the natural order).
        seed: base seed, the same on every rank.
    """

    def __init__(
        self, length: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.shuffle, self.seed = shuffle, int(seed)
        self.num_samples = length // num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation; also resets the resume offset to 0."""
        self.epoch, self.start = int(epoch), 0

    def skip(self, count: int) -> None:
        """Skip the first ``count`` samples of this rank in the current epoch."""
        self.start = int(count)

    def _order(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        aug = torch.randint(0, 2**31 - 1, (self.length,), generator=g)
        total = self.num_samples * self.num_replicas
        sl = slice(self.rank, total, self.num_replicas)
        return order[:total][sl], aug[:total][sl]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, aug = self._order()
        yield from zip(order[self.start :].tolist(), aug[self.start :].tolist(), strict=True)

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.start, self.seed = (
            int(state["epoch"]),
            int(state["start"]),
            int(state["seed"]),
        )
