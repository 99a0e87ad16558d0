"""Cross-shard reductions that margin heads need under model parallelism.

A margin head sees one shard of the class centres (the columns of the cosine matrix that live
on this rank). Heads whose logits depend on *all* classes of a sample (the positive cosine,
which lives on one shard only; NPCFace's hard-negative mean; AdaCos' sum of exponentials) ask
a :class:`ShardComm` to sum or max-reduce small per-sample tensors across shards.
:class:`LocalComm` is the single-shard identity; :class:`ProcessGroupComm` wraps a
``torch.distributed`` process group. Nothing here initialises a process group.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor
from torch import distributed as dist

__all__ = ["LocalComm", "ProcessGroupComm", "ShardComm", "default_comm", "get_comm"]


@runtime_checkable
class ShardComm(Protocol):
    """Reductions across the shards of the class dimension.

    Both methods reduce in place when they can and return the reduced tensor; the tensors are
    small (per-sample statistics), never the N x C logits.
    """

    world_size: int

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over shards; every shard gets the result."""
        ...

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        """Element-wise maximum of ``tensor`` over shards; every shard gets the result."""
        ...


class LocalComm:
    """One shard holds every class: reductions are the identity."""

    world_size = 1

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        return tensor


class ProcessGroupComm:
    """Reductions over a ``torch.distributed`` process group (gloo on CPU, NCCL on GPU).

    Args:
        group: the process group; ``None`` means the default (world) group, which must
            already be initialised.
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ProcessGroupComm needs an initialised torch.distributed group")
        self.group = group
        self.world_size = dist.get_world_size(group)

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        tensor = tensor.contiguous()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        tensor = tensor.contiguous()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return tensor


def get_comm(comm: ShardComm | None) -> ShardComm:
    """``comm`` itself, or a :class:`LocalComm` when ``None``."""
    return LocalComm() if comm is None else comm


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def default_comm() -> ShardComm:
    """A :class:`ProcessGroupComm` on the world group when one is running, else local."""
    return ProcessGroupComm() if _is_distributed() else LocalComm()
