"""Partial FC: class centres sharded over ranks, sampled negatives, distributed cross-entropy.

Paper: An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face
Recognition CNNs by Partial FC", https://arxiv.org/abs/2203.15565 (insightface
``arcface_torch/partial_fc_v2.py`` is the reference layout).

Each rank keeps the centres of a contiguous slice of the classes. A step:

1. all-gather the embeddings (with gradient) and labels of every rank: each rank scores the
   whole global batch against its own centres;
2. with ``sample_rate < 1``, keep every positive centre of the batch on this shard plus a
   random subset of the negatives, ``sample_rate * num_local`` centres in all;
3. cosine = normalised embeddings x normalised (sampled) centres, in float32;
4. the margin head turns cosines into logits; heads that need every shard (the positive
   cosine, NPCFace's hard-negative mean and count, AdaCos' sums) all-reduce small per-sample
   tensors through :class:`~npcface.training.comm.ShardComm`;
5. softmax cross-entropy with its max and denominator all-reduced over shards.

With ``sample_rate = 1`` and one process this is exactly the usual FC + head + CE. Under
sampling, heads only ever see the sampled centres: NPCFace's hard-negative mask and
cooperative margin, CurricularFace's mask and AdaCos' ``B_avg`` are computed over the sampled
negatives, not all of them.

The optimizer updates every row of the weight each step (momentum and weight decay act on
non-sampled rows as in ``partial_fc_v2``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import distributed as dist

from .comm import LocalComm, ProcessGroupComm, ShardComm

__all__ = ["PartialFC", "dist_cross_entropy", "shard_range"]

log = logging.getLogger(__name__)

_INIT_BLOCK = 4096  # rows per seeded block, so the init does not depend on the world size


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, count)`` of the classes owned by ``rank`` (the first ranks get one extra)."""
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + int(rank < extra)


def _init_rows(start: int, count: int, dim: int, std: float, seed: int) -> Tensor:
    """Rows ``start:start+count`` of a N(0, std) matrix that is the same for any sharding."""
    out = torch.empty(count, dim)
    row = start
    while row < start + count:
        block = row // _INIT_BLOCK
        g = torch.Generator().manual_seed(seed * 1_000_003 + block)
        full = torch.randn(_INIT_BLOCK, dim, generator=g) * std
        lo = row - block * _INIT_BLOCK
        hi = min(_INIT_BLOCK, start + count - block * _INIT_BLOCK)
        out[row - start : row - start + hi - lo] = full[lo:hi]
        row += hi - lo
    return out


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0; backward sums every rank's gradient and keeps this rank's rows.

    The gradient is multiplied by ``grad_scale`` (the world size when the backbone is wrapped
    in DDP, which averages gradients over ranks, so the backbone receives the gradient of
    the global mean loss).
    """

    @staticmethod
    def forward(ctx, x: Tensor, group: Any, grad_scale: float) -> Tensor:
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.group, ctx.rank, ctx.world, ctx.grad_scale = group, rank, world, grad_scale
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        mine = grad.chunk(ctx.world)[ctx.rank]
        return mine * ctx.grad_scale, None, None


class _DistCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over logits whose classes are split over shards."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        n = logits.shape[0]
        has = labels >= 0
        index = labels.clamp_min(0).unsqueeze(1)
        row_max = comm.all_reduce_max(logits.max(dim=1, keepdim=True).values.detach().clone())
        probs = torch.exp(logits - row_max)
        denom = comm.all_reduce_sum(probs.sum(dim=1, keepdim=True))
        probs.div_(denom)
        target = torch.where(has, logits.gather(1, index).squeeze(1), torch.zeros(n).to(logits))
        target = comm.all_reduce_sum(target.contiguous())
        loss = (denom.squeeze(1).log() + row_max.squeeze(1) - target).mean()
        ctx.save_for_backward(probs, labels)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        probs, labels = ctx.saved_tensors
        has = labels >= 0
        rows = torch.nonzero(has).squeeze(1)
        g = probs.clone()
        g[rows, labels[rows]] -= 1.0
        g.mul_(grad / probs.shape[0])
        return g, None, None


def dist_cross_entropy(logits: Tensor, labels: Tensor, comm: ShardComm | None = None) -> Tensor:
    """Mean cross-entropy of (N, C_local) logits; ``labels`` -1 where the class is elsewhere.

    With one shard this is ``F.cross_entropy``.
    """
    if comm is None or comm.world_size == 1:
        return F.cross_entropy(logits, labels)
    return _DistCrossEntropy.apply(logits, labels, comm)


class PartialFC(nn.Module):
    """Sharded, optionally sampled FC layer + margin head + cross-entropy.

    Args:
        margin_loss: a head, ``head(cosine, labels, comm) -> logits``
            (see :mod:`npcface.training.heads`).
        embedding_size: embedding length D.
        num_classes: total number of classes over all ranks.
        sample_rate: fraction of this shard's centres used per step; positives are always
            kept (Partial FC paper: 0.1 loses almost nothing at scale; 1.0 = model parallel).
        group: process group; ``None`` = the default group when ``torch.distributed`` is
            initialised with more than one process, else a single shard.
        init_std: standard deviation of the centres' normal init (arcface_torch: 0.01).
        init_row_norm: rescale each initial centre to this norm (1.0: the NPCFace authors'
            FaceX-Zoo code, unit-norm centres); 0 keeps the N(0, init_std) norms. The norm
            matters because the gradient through the normalisation scales with 1 / norm.
        seed: seed of the centre init (identical for any world size) and of the sampler.
        fc_autocast: let the cosine matmul run under the caller's autocast dtype (fast on
            GPU with fp16); the head itself always runs in float32. Default: float32 matmul.
        ddp_grad_scale: multiply the embeddings' gradient by the world size, for backbones
            wrapped in DDP (which averages gradients).
    """

    def __init__(
        self,
        margin_loss: Callable[..., Tensor],
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        *,
        group: dist.ProcessGroup | None = None,
        init_std: float = 0.01,
        init_row_norm: float = 0.0,
        seed: int = 0,
        fc_autocast: bool = False,
        ddp_grad_scale: bool = True,
    ) -> None:
        super().__init__()
        if not callable(margin_loss):
            raise TypeError(f"margin_loss must be callable, not {type(margin_loss).__name__}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], not {sample_rate}")
        distributed = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size(group) if distributed else 1
        self.rank = dist.get_rank(group) if distributed else 0
        self.group = group
        self.comm: ShardComm = ProcessGroupComm(group) if self.world_size > 1 else LocalComm()
        self.margin_loss = margin_loss
        self.embedding_size, self.num_classes = embedding_size, num_classes
        self.sample_rate, self.fc_autocast = float(sample_rate), bool(fc_autocast)
        self.ddp_grad_scale = bool(ddp_grad_scale)
        self.class_start, self.num_local = shard_range(num_classes, self.rank, self.world_size)
        self.num_sample = max(1, int(self.sample_rate * self.num_local))
        rows = _init_rows(self.class_start, self.num_local, embedding_size, init_std, seed)
        if init_row_norm > 0:
            rows = F.normalize(rows, dim=1) * init_row_norm
        self.weight = nn.Parameter(rows)
        self._gen = torch.Generator().manual_seed(seed * 7919 + self.rank)
        self.last_index: Tensor | None = None  # centres used by the last step (sampling)

    # generator state travels with state_dict() (weights_only-loadable: a uint8 tensor)
    def get_extra_state(self) -> dict[str, Tensor]:
        return {"sampler_generator": self._gen.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self._gen.set_state(state["sampler_generator"])

    @torch.no_grad()
    def _sample(self, local: Tensor, in_shard: Tensor) -> tuple[Tensor, Tensor]:
        positive = torch.unique(local[in_shard], sorted=True)
        if self.num_sample > positive.numel():
            score = torch.rand(self.num_local, generator=self._gen).to(local.device)
            score[positive] = 2.0  # always kept
            index = torch.topk(score, self.num_sample).indices.sort().values
        else:
            index = positive
        local = local.clone()
        local[in_shard] = torch.searchsorted(index, local[in_shard])
        return index, local

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss (scalar, identical on every rank) for this rank's batch.

        Args:
            embeddings: (B, D) backbone outputs of this rank (not normalised).
            labels: (B,) global class ids in ``[0, num_classes)``.
        """
        labels = labels.reshape(-1).long()
        if embeddings.shape[0] != labels.shape[0]:
            raise ValueError("embeddings and labels must have the same batch size")
        if self.world_size > 1:
            scale = float(self.world_size) if self.ddp_grad_scale else 1.0
            embeddings = _AllGather.apply(embeddings, self.group, scale)
            parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(parts, labels, group=self.group)
            labels = torch.cat(parts)
        local = labels - self.class_start
        in_shard = (local >= 0) & (local < self.num_local)
        local = torch.where(in_shard, local, torch.full_like(local, -1))
        weight = self.weight
        if self.sample_rate < 1.0 and self.training:
            index, local = self._sample(local, in_shard)
            self.last_index = index
            weight = self.weight[index]
        with torch.autocast(device_type=embeddings.device.type, enabled=self.fc_autocast):
            emb = embeddings if self.fc_autocast else embeddings.float()
            cosine = F.linear(F.normalize(emb, dim=1), F.normalize(weight, dim=1))
        logits = self.margin_loss(cosine.float().clamp(-1.0, 1.0), local, self.comm)
        return dist_cross_entropy(logits, local, self.comm)

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"shard=[{self.class_start}, {self.class_start + self.num_local}), "
            f"sample_rate={self.sample_rate}, world_size={self.world_size}"
        )
