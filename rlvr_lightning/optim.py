"""Learning-rate schedules for RLVR runs (verl's default is a constant rate after a linear warm-up)."""

from __future__ import annotations

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
