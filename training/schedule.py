"""The learning-rate schedule of the paper's recipe: a linear warm-up, then the base rate
multiplied by ``gamma`` at each milestone (NPCFace, arXiv 2007.10172, section 4.1: SGD,
lr 0.1 divided by 10 at the milestones)."""

from __future__ import annotations


def lr_factor(
    step: int, total_steps: int, milestones: list[int], gamma: float, warmup_steps: int
) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then ``gamma`` per milestone."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * gamma ** sum(step >= m for m in milestones)
