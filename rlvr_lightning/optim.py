"""Learning-rate schedules for RLVR runs (verl's default is a constant rate after a linear warm-up)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class ConstantWithWarmup(LambdaLR):
    """Linear warm-up from ``1/(warmup_steps+1)`` of the base rate to the full rate, then constant.

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: optimizer steps of linear warm-up (0: constant from the first step).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))


class CosineWithWarmup(LambdaLR):
    """Linear warm-up, then cosine decay to ``min_ratio`` of the base rate at ``total_steps``.

    Args:
        optimizer: the wrapped optimizer.
        total_steps: optimizer steps of the whole run.
        warmup_steps: optimizer steps of linear warm-up.
        min_ratio: final rate as a fraction of the base rate.
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
    ) -> None:
        if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"need total_steps > 0 and 0 <= warmup_steps < total_steps, got {total_steps}, {warmup_steps}"
            )

        def factor(s: int) -> float:
            if s < warmup_steps:
                return (s + 1) / (warmup_steps + 1)
            t = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        super().__init__(optimizer, factor)
