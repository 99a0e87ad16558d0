"""Margin heads: cosine logits in, scaled logits out (what goes into softmax cross-entropy).

Every head is a callable ``head(cosine, labels, comm=None) -> logits`` with

- ``cosine``: (N, C) cosines between L2-normalised embeddings and class centres. Under model
  parallelism (:mod:`npcface.training.partial_fc`) C is this rank's shard of the (sampled)
  centres and N the global batch.
- ``labels``: (N,) int64 column of each sample's positive class in ``cosine``, or ``-1`` when
  the positive centre lives on another shard.
- ``comm``: a :class:`~npcface.training.comm.ShardComm` for the few per-sample statistics
  that need every shard (the positive cosine, NPCFace's hard-negative mean, AdaCos' sums).
  ``None`` means one shard holds every class.

Heads run in float32 even inside an autocast region (the cosine is cast up and autocast is
disabled inside), clamp cosines to [-1, 1] and keep ``sqrt`` away from zero, so logits and
gradients stay finite at cos = +-1 and under fp16/bf16 autocast.

Heads are registered by name: :func:`get_head` builds one, :func:`list_heads` lists them.
:func:`npcface_logits` is the NPCFace logit computation as a pure function.

Shared conventions (documented once here, used by every margin head):

- The additive angular margin ``cos(theta + m)`` uses the usual ArcFace fallback when
  ``theta + m > pi`` (where ``cos`` stops decreasing in ``theta``):
  ``cos(theta) - m * sin(m)`` (see :func:`arc_margin`). The switch is per sample, so it
  works with NPCFace's per-sample margin ``m_i``.
- A negative is *hard* (mis-classified, MV-softmax's rule) when its cosine is strictly
  greater than the margined positive of the head's margin type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from npcface.registry import Registry

from .comm import ShardComm, get_comm

__all__ = [
    "SQRT_EPS",
    "AdaCos",
    "ArcFace",
    "CosFace",
    "CurricularFace",
    "MVSoftmax",
    "MarginHead",
    "NPCFace",
    "NormSoftmax",
    "SphereFace",
    "arc_margin",
    "get_head",
    "list_heads",
    "npcface_logits",
    "npcface_mask_and_margin",
    "register_head",
]

SQRT_EPS = 1e-12
"""Lower bound of ``1 - cos^2`` before ``sqrt`` in ``sin(theta)``: keeps the gradient finite
at cos = +-1 (the public NPCFace reference has none and returns NaN gradients there). In
float32 the smallest positive ``1 - cos^2`` is about 6e-8, so the bound never changes a value;
it only guards the gradient."""

PositiveKind = Literal["arc", "cos"]

HEADS: Registry[Callable[..., MarginHead]] = Registry("head")


def register_head(name: str, *aliases: str) -> Callable:
    """Class decorator adding a head to the registry under ``name`` (and ``aliases``)."""
    return HEADS.register(name, *aliases)


def get_head(name: str, **kwargs) -> MarginHead:
    """Build a registered head.

    Args:
        name: a name from :func:`list_heads` (case-insensitive).
        **kwargs: the head's hyper-parameters (see each class).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    return HEADS.get(name)(**kwargs)


def list_heads() -> list[str]:
    """Names of the registered heads (aliases included), sorted."""
    return HEADS.names()


# ----------------------------------------------------------------------------- helpers


class _ClampUnit(torch.autograd.Function):
    """Clamp to [-1, 1] with an identity gradient.

    The clamp only removes rounding excursions of normalised dot products beyond +-1, so
    its gradient is taken as 1 everywhere; this spares the backward pass the four N x C
    comparisons of ``torch.clamp``'s gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def clamp_unit(cos: Tensor) -> Tensor:
    """``cos.clamp(-1, 1)`` with a straight-through (identity) gradient."""
    return _ClampUnit.apply(cos)


def _sin_from_cos(cos: Tensor, eps: float = SQRT_EPS) -> Tensor:
    """``sqrt(1 - cos^2)``: exact forward (0 at |cos| = 1), finite gradient everywhere.

    The clamp at ``eps`` keeps ``sqrt``'s derivative finite in the branch ``where`` drops,
    so no ``0 * inf`` NaN reaches the gradient at cos = +-1 (where the gradient through
    ``sin`` is taken as 0).
    """
    x = 1.0 - cos * cos
    return torch.where(x > 0, torch.sqrt(x.clamp(min=eps)), torch.zeros_like(x))


def arc_margin(cos_y: Tensor, m: float | Tensor, eps: float = SQRT_EPS) -> Tensor:
    """``cos(theta + m)`` from ``cos(theta)``, monotone in theta over [0, pi].

    Where ``theta + m <= pi`` this is ``cos_y * cos(m) - sin(theta) * sin(m)``; beyond it,
    the ArcFace fallback ``cos_y - m * sin(m)`` (linear in ``cos_y``, so still decreasing in
    theta). ``m`` may be a float or a per-sample tensor broadcastable to ``cos_y``.
    """
    m_t = torch.as_tensor(m, dtype=cos_y.dtype, device=cos_y.device)
    cos_m, sin_m = torch.cos(m_t), torch.sin(m_t)
    exact = cos_y * cos_m - _sin_from_cos(cos_y, eps) * sin_m
    fallback = cos_y - m_t * sin_m
    return torch.where(cos_y > torch.cos(math.pi - m_t), exact, fallback)


def _margined(cos_y: Tensor, m: float | Tensor, kind: PositiveKind, eps: float) -> Tensor:
    if kind == "arc":
        return arc_margin(cos_y, m, eps)
    if kind == "cos":
        return cos_y - m
    raise ValueError(f"positive margin kind must be 'arc' or 'cos', not {kind!r}")


class _Positive:
    """The positive cosine of every row: local (with gradient) and global (detached)."""

    __slots__ = ("has", "index", "local", "glob")

    def __init__(self, cosine: Tensor, labels: Tensor, comm: ShardComm) -> None:
        labels = labels.reshape(-1).long()
        self.has = labels >= 0  # positive centre is a column of this shard
        self.index = labels.clamp_min(0).unsqueeze(1)
        self.local = cosine.gather(1, self.index).squeeze(1)
        with torch.no_grad():
            glob = torch.where(self.has, self.local.detach(), torch.zeros_like(self.local))
            self.glob = comm.all_reduce_sum(glob) if comm.world_size > 1 else glob

    def exclude(self, mask: Tensor) -> Tensor:
        """``mask`` (N, C bool) with the positive column set to False (in place)."""
        keep = mask.gather(1, self.index) & ~self.has.unsqueeze(1)
        return mask.scatter_(1, self.index, keep)

    def put(self, logits: Tensor, values: Tensor) -> Tensor:
        """``logits`` with ``values`` (N,) written (in place) to the positive column of the
        rows this shard owns. ``logits`` must be a fresh tensor that autograd has not saved."""
        rows = torch.nonzero(self.has).squeeze(1)
        return logits.index_put_((rows, self.index.squeeze(1)[rows]), values[rows])


class MarginHead(nn.Module):
    """Base class: casts to float32, disables autocast, clamps, then calls :meth:`logits`."""

    def forward(self, cosine: Tensor, labels: Tensor, comm: ShardComm | None = None) -> Tensor:
        """Scaled logits (N, C) float32 for cross-entropy.

        Args:
            cosine: (N, C) cosines (any float dtype).
            labels: (N,) positive column per row, ``-1`` if on another shard.
            comm: cross-shard reductions; ``None`` for a single shard.
        """
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cos = clamp_unit(cosine.float())
            return self.logits(cos, labels.reshape(-1).long(), get_comm(comm))

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        names = [k for k in vars(self) if not k.startswith("_") and k != "training"]
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in names)


# ----------------------------------------------------------------------------- heads


@register_head("softmax", "normface")
class NormSoftmax(MarginHead):
    """Normalised softmax (NormFace): ``s * cos(theta_j)`` for every class, no margin.

    Paper: Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification",
    https://arxiv.org/abs/1704.06369

    Args:
        s: logit scale. 32 as the NPCFace/MV-softmax lineage (NormFace learns or fixes it).
    """

    def __init__(self, s: float = 32.0) -> None:
        super().__init__()
        self.s = float(s)

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        return cos * self.s


@register_head("cosface", "am_softmax")
class CosFace(MarginHead):
    """CosFace / AM-softmax: positive ``s * (cos(theta_y) - m)``, negatives ``s * cos``.

    Papers: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
    https://arxiv.org/abs/1801.09414 ; Wang et al., "Additive Margin Softmax for Face
    Verification", https://arxiv.org/abs/1801.05599

    Args:
        s: logit scale (CosFace paper: 64; AM-softmax paper: 30).
        m: additive cosine margin (both papers: 0.35).
    """

    def __init__(self, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__()
        self.s, self.m = float(s), float(m)

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        pos = _Positive(cos, labels, comm)
        return pos.put(cos * self.s, (pos.local - self.m) * self.s)


@register_head("arcface")
class ArcFace(MarginHead):
    """ArcFace: positive ``s * cos(theta_y + m)``, negatives ``s * cos(theta_j)``.

    Paper: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    https://arxiv.org/abs/1801.07698

    Beyond ``theta_y + m > pi`` the positive uses the ArcFace fallback
    ``cos(theta_y) - m * sin(m)`` (:func:`arc_margin`).

    Args:
        s: logit scale (paper: 64).
        m: additive angular margin in radians (paper: 0.5).
        eps: lower bound of ``1 - cos^2`` under the square root.
    """

    def __init__(self, s: float = 64.0, m: float = 0.5, eps: float = SQRT_EPS) -> None:
        super().__init__()
        self.s, self.m, self.eps = float(s), float(m), float(eps)

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        pos = _Positive(cos, labels, comm)
        return pos.put(cos * self.s, arc_margin(pos.local, self.m, self.eps) * self.s)


@register_head("sphereface")
class SphereFace(MarginHead):
    """SphereFace-style multiplicative angular margin on normalised features.

    Positive ``s * psi(theta_y)`` with ``psi(theta) = (-1)^k cos(m theta) - 2k``,
    ``k = floor(m theta / pi)`` (the monotone extension of ``cos(m theta)`` from the paper),
    optionally blended as ``(lam * cos + psi) / (1 + lam)`` (the paper's annealing);
    negatives ``s * cos(theta_j)``. Features are normalised and scaled by ``s`` instead of
    keeping their norm, as in later normalised variants.

    Paper: Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition",
    https://arxiv.org/abs/1704.08063

    Args:
        s: logit scale (64, as ArcFace).
        m: multiplicative angular margin. The paper's integer m = 4 needs feature norms and
            annealing; with normalised features 1.5 is usable and equals ArcFace's m = 0.5 at
            theta = 1 rad (cos(1.5) both ways).
        lam: annealing weight of the plain cosine (0 = pure margin).
        eps: keeps ``acos`` away from +-1 where its derivative is infinite.
    """

    def __init__(self, s: float = 64.0, m: float = 1.5, lam: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.s, self.m, self.lam, self.eps = float(s), float(m), float(lam), float(eps)

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        pos = _Positive(cos, labels, comm)
        theta = torch.acos(pos.local.clamp(-1.0 + self.eps, 1.0 - self.eps))
        k = torch.floor(self.m * theta / math.pi).detach()
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
        psi = sign * torch.cos(self.m * theta) - 2.0 * k
        psi = (self.lam * pos.local + psi) / (1.0 + self.lam)
        return pos.put(cos * self.s, psi * self.s)


@register_head("mv_softmax")
class MVSoftmax(MarginHead):
    """MV-softmax: mis-classified negatives get ``t * cos + t - 1``.

    A negative is hard when ``cos(theta_j)`` beats the margined positive (``cos(theta_y + m)``
    for ``variant="arc"``, ``cos(theta_y) - m`` for ``variant="am"``); hard negatives get
    ``s * (t * cos + t - 1)``, easy ones ``s * cos``; the positive is the margined one.

    Paper: Wang et al., "Mis-classified Vector Guided Softmax Loss for Face Recognition",
    https://arxiv.org/abs/1912.00833

    Args:
        variant: "arc" (MV-Arc-Softmax) or "am" (MV-AM-Softmax).
        s: logit scale (paper/public code: 32).
        m: margin (public code: 0.35 for both variants).
        t: hard-negative weight, >= 1 (public code default: 1.12).
        eps: lower bound of ``1 - cos^2`` under the square root.
    """

    def __init__(
        self,
        variant: Literal["arc", "am"] = "arc",
        s: float = 32.0,
        m: float = 0.35,
        t: float = 1.12,
        eps: float = SQRT_EPS,
    ) -> None:
        super().__init__()
        if variant not in ("arc", "am"):
            raise ValueError(f"MV-softmax variant must be 'arc' or 'am', not {variant!r}")
        self.variant, self.s, self.m, self.t, self.eps = variant, float(s), float(m), float(t), eps

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        kind: PositiveKind = "arc" if self.variant == "arc" else "cos"
        pos = _Positive(cos, labels, comm)
        with torch.no_grad():
            thr = _margined(pos.glob, self.m, kind, self.eps)
            hard = pos.exclude(cos > thr.unsqueeze(1))
        neg = torch.where(hard, cos * self.t + (self.t - 1.0), cos)
        return pos.put(neg * self.s, _margined(pos.local, self.m, kind, self.eps) * self.s)


@register_head("mv_arc_softmax")
class MVArcSoftmax(MVSoftmax):
    """MV-Arc-Softmax: :class:`MVSoftmax` with ``variant="arc"``. https://arxiv.org/abs/1912.00833"""

    def __init__(self, s: float = 32.0, m: float = 0.35, t: float = 1.12, eps: float = SQRT_EPS):
        super().__init__("arc", s, m, t, eps)


@register_head("mv_am_softmax")
class MVAMSoftmax(MVSoftmax):
    """MV-AM-Softmax: :class:`MVSoftmax` with ``variant="am"``. https://arxiv.org/abs/1912.00833"""

    def __init__(self, s: float = 32.0, m: float = 0.35, t: float = 1.12, eps: float = SQRT_EPS):
        super().__init__("am", s, m, t, eps)


@register_head("curricularface")
class CurricularFace(MarginHead):
    """CurricularFace: hard negatives get ``cos * (t + cos)`` with ``t`` an EMA of cos_y.

    Positive ``s * cos(theta_y + m)`` (ArcFace fallback beyond pi); a negative is hard when
    ``cos(theta_j) > cos(theta_y + m)``; hard negatives ``s * cos_j * (t + cos_j)``, easy ones
    ``s * cos_j``. ``t`` (a buffer, saved with the model) follows
    ``t <- momentum * mean(cos_y) + (1 - momentum) * t`` at every training step, before the
    logits are computed, as in the paper's code.

    Paper: Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face
    Recognition", https://arxiv.org/abs/2004.00288

    Args:
        s: logit scale (paper: 64).
        m: additive angular margin (paper: 0.5).
        momentum: EMA weight of the batch mean positive cosine (paper: 0.01).
        eps: lower bound of ``1 - cos^2`` under the square root.
    """

    t: Tensor

    def __init__(
        self, s: float = 64.0, m: float = 0.5, momentum: float = 0.01, eps: float = SQRT_EPS
    ) -> None:
        super().__init__()
        self.s, self.m, self.momentum, self.eps = float(s), float(m), float(momentum), eps
        self.register_buffer("t", torch.zeros(()))

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        pos = _Positive(cos, labels, comm)
        with torch.no_grad():
            if self.training:
                self.t.mul_(1.0 - self.momentum).add_(self.momentum * pos.glob.mean())
            thr = arc_margin(pos.glob, self.m, self.eps)
            hard = pos.exclude(cos > thr.unsqueeze(1))
        t = self.t.to(cos.dtype)
        neg = torch.where(hard, cos * (t + cos), cos)
        return pos.put(neg * self.s, arc_margin(pos.local, self.m, self.eps) * self.s)


@register_head("adacos")
class AdaCos(MarginHead):
    """AdaCos: no margin, an adaptive scale ``s`` for ``s * cos(theta_j)``.

    Fixed AdaCos: ``s = sqrt(2) * log(C - 1)``. Dynamic AdaCos (default) updates ``s`` at
    every training step before computing the logits:
    ``s <- log(B_avg) / cos(min(pi/4, theta_med))`` with
    ``B_avg = (1/N) sum_i sum_{j != y_i} exp(s * cos_ij)`` (the sum runs over all shards,
    computed as a log-sum-exp) and ``theta_med`` the median positive angle of the batch.
    ``s`` is a buffer saved with the model. Under Partial FC sampling ``B_avg`` only sees the
    sampled centres.

    Paper: Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively Learning
    Deep Face Representations", https://arxiv.org/abs/1905.00292

    Args:
        num_classes: total number of classes C for the initial scale; ``None`` takes the
            total number of columns over all shards at the first call.
        dynamic: update ``s`` during training (the paper's dynamic AdaCos).
        theta_cap: upper bound of ``theta_med`` in the update (paper: pi/4).
    """

    scale: Tensor

    def __init__(
        self, num_classes: int | None = None, dynamic: bool = True, theta_cap: float = math.pi / 4
    ) -> None:
        super().__init__()
        self.num_classes, self.dynamic, self.theta_cap = num_classes, bool(dynamic), theta_cap
        self.register_buffer("scale", torch.zeros(()))  # 0 = not initialised yet

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        pos = _Positive(cos, labels, comm)
        with torch.no_grad():
            if float(self.scale) == 0.0:
                c = self.num_classes
                if c is None:
                    c = int(comm.all_reduce_sum(torch.tensor(float(cos.shape[1]))).item())
                self.scale.fill_(math.sqrt(2.0) * math.log(max(c - 1, 2)))
            if self.training and self.dynamic:
                negatives = pos.exclude(torch.ones_like(cos, dtype=torch.bool))
                z = (cos * self.scale).masked_fill(~negatives, -math.inf)
                zmax = comm.all_reduce_max(z.max().reshape(1))
                total = comm.all_reduce_sum(torch.exp(z - zmax).sum().reshape(1))
                log_b_avg = zmax + torch.log(total) - math.log(cos.shape[0])
                theta_med = torch.acos(pos.glob.clamp(-1.0, 1.0)).median()
                theta_med = torch.clamp(theta_med, max=self.theta_cap)
                self.scale.copy_((log_b_avg / torch.cos(theta_med)).squeeze())
        return cos * self.scale.to(cos.dtype)


def npcface_logits(
    cosine: Tensor,
    labels: Tensor,
    s: float = 32.0,
    m0: float = 0.4,
    m1: float = 0.2,
    t: float = 1.1,
    alpha: float = 0.25,
    *,
    positive: PositiveKind = "arc",
    comm: ShardComm | None = None,
    eps: float = SQRT_EPS,
) -> Tensor:
    """NPCFace logits: hard-negative modulation and the cooperative positive margin.

    Paper: Zeng et al., "NPCFace: Negative-Positive Cooperation Supervision for Training
    Large-scale Face Recognition", https://arxiv.org/abs/2007.10172

    With ``cos_y = cos(theta_iy)`` and ``marg(c, m)`` the margined positive (``cos(theta + m)``
    with the ArcFace fallback beyond pi for ``positive="arc"``; ``c - m`` for ``"cos"``):

    1. Mask (constant for back-propagation): ``M_ij = [cos_ij > marg(cos_y, m0)]`` for
       ``j != y_i``; the basic margin ``m0`` defines it.
    2. Negatives: ``f_j = s * (t * cos_ij + alpha)`` if ``M_ij`` else ``s * cos_ij``; the
       gradient flows through both (``s * t`` per unit cosine on hard negatives).
    3. Cooperative margin (constant for back-propagation):
       ``m_i = m0 + m1 * mean_{j: M_ij} cos_ij`` if sample i has a hard negative, else ``m0``;
       so ``m0 - m1 <= m_i <= m0 + m1``.
    4. Positive: ``f_y = s * marg(cos_y, m_i)``.

    Under model parallelism the positive cosine and the per-sample sum and count of hard
    cosines are all-reduced over shards, so the mask and ``m_i`` see every shard's hard
    negatives. Under Partial FC sampling they only see the sampled centres.

    Args:
        cosine: (N, C) cosines (any float dtype; computed in float32, clamped to [-1, 1]).
        labels: (N,) int64 positive column per row; ``-1`` when the positive lives on
            another shard (only meaningful with ``comm``).
        s: logit scale (not in the paper's text; its MV-softmax lineage and public code: 32).
        m0: base angular margin, also the mask's margin (paper: 0.4).
        m1: weight of the hard-negative mean cosine in the cooperative margin (paper: 0.2).
        t: multiplicative part of the hard-negative logit, >= 1 (paper: 1.1).
        alpha: additive part of the hard-negative logit, >= 0 (paper: 0.25; MV-softmax ties
            it to ``t - 1``).
        positive: "arc" (``cos(theta_y + m_i)``, the paper's form) or "cos" (CosFace-style
            ``cos_y - m_i``; the mask then uses ``cos_y - m0``).
        comm: cross-shard reductions; ``None`` when ``cosine`` holds every class.
        eps: lower bound of ``1 - cos^2`` under the square root.

    Returns:
        (N, C) float32 scaled logits for softmax cross-entropy.
    """
    if positive not in ("arc", "cos"):
        raise ValueError(f"positive must be 'arc' or 'cos', not {positive!r}")
    comm = get_comm(comm)
    with torch.autocast(device_type=cosine.device.type, enabled=False):
        cos = clamp_unit(cosine.float())
        pos = _Positive(cos, labels, comm)
        hard_f, m_i = _npc_mask_margin(cos, pos, m0, m1, positive, comm, eps)
        # 2. negatives (scale folded in): s*(t*cos + alpha) on hard ones, s*cos elsewhere,
        #    as one fused cos * slope + offset whose gradient is slope (s*t or s)
        with torch.no_grad():
            slope = hard_f.mul(s * t - s).add_(s)
            offset = hard_f.mul_(s * alpha)
        neg = torch.addcmul(offset, cos, slope)
        # 4. positive with the per-sample margin
        return pos.put(neg, _margined(pos.local, m_i, positive, eps) * s)


@torch.no_grad()
def _npc_mask_margin(
    cos: Tensor,
    pos: _Positive,
    m0: float,
    m1: float,
    positive: PositiveKind,
    comm: ShardComm,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """(hard mask as 0/1 floats (N, C), m_i (N,)); both constants for back-propagation."""
    # 1. the mask: negatives that beat the m0-margined positive
    hard = pos.exclude(cos > _margined(pos.glob, m0, positive, eps).unsqueeze(1))
    hard_f = hard.to(cos.dtype)
    # 3. cooperative margin from the mean hard-negative cosine over all shards
    stats = torch.stack([(cos * hard_f).sum(1), hard_f.sum(1)], 1)
    if comm.world_size > 1:
        stats = comm.all_reduce_sum(stats)
    hard_sum, hard_count = stats.unbind(1)
    mean_hard = hard_sum / hard_count.clamp_min(1.0)
    m_i = torch.where(hard_count > 0, m0 + m1 * mean_hard, torch.full_like(hard_sum, m0))
    return hard_f, m_i


def npcface_mask_and_margin(
    cosine: Tensor,
    labels: Tensor,
    m0: float = 0.4,
    m1: float = 0.2,
    *,
    positive: PositiveKind = "arc",
    comm: ShardComm | None = None,
    eps: float = SQRT_EPS,
) -> tuple[Tensor, Tensor]:
    """The two constants of :func:`npcface_logits`: the hard-negative mask and ``m_i``.

    Returns:
        ``(hard, m_i)``: (N, C) bool mask ``M_ij`` (False on the positive column) and (N,)
        float32 cooperative margins. Both carry no gradient.
    """
    comm = get_comm(comm)
    with torch.autocast(device_type=cosine.device.type, enabled=False):
        cos = cosine.detach().float().clamp(-1.0, 1.0)
        hard_f, m_i = _npc_mask_margin(
            cos, _Positive(cos, labels, comm), m0, m1, positive, comm, eps
        )
        return hard_f.bool(), m_i


@register_head("npcface")
class NPCFace(MarginHead):
    """NPCFace head: :func:`npcface_logits` with its hyper-parameters as attributes.

    Paper: Zeng et al., "NPCFace: Negative-Positive Cooperation Supervision for Training
    Large-scale Face Recognition", https://arxiv.org/abs/2007.10172

    Args:
        s: logit scale (not stated in the paper; public code and MV-softmax: 32).
        m0: base angular margin and the mask's margin (paper: 0.4).
        m1: cooperative margin weight (paper: 0.2).
        t: hard-negative multiplicative term (paper: 1.1).
        alpha: hard-negative additive term (paper: 0.25).
        positive: "arc" (paper) or "cos" (CosFace-style positive with the cooperative margin).
        eps: lower bound of ``1 - cos^2`` under the square root.
    """

    def __init__(
        self,
        s: float = 32.0,
        m0: float = 0.4,
        m1: float = 0.2,
        t: float = 1.1,
        alpha: float = 0.25,
        positive: PositiveKind = "arc",
        eps: float = SQRT_EPS,
    ) -> None:
        super().__init__()
        if positive not in ("arc", "cos"):
            raise ValueError(f"positive must be 'arc' or 'cos', not {positive!r}")
        if t < 1.0 or alpha < 0.0:
            raise ValueError(f"NPCFace needs t >= 1 and alpha >= 0 (got t={t}, alpha={alpha})")
        self.s, self.m0, self.m1, self.t, self.alpha = (
            float(s),
            float(m0),
            float(m1),
            float(t),
            float(alpha),
        )
        self.positive, self.eps = positive, float(eps)

    def logits(self, cos: Tensor, labels: Tensor, comm: ShardComm) -> Tensor:
        return npcface_logits(
            cos, labels, self.s, self.m0, self.m1, self.t, self.alpha,
            positive=self.positive, comm=comm, eps=self.eps,
        )  # fmt: skip
