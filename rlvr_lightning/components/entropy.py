"""Built-in entropy regularizers: none, a constant coefficient, and Ada-Ent-Reg (adaptive to a target).

Each maps ``(entropy, mask)``, both ``(B, T)``, to the per-token loss term ``-alpha * entropy`` ``(B, T)``, 0
on padding; it is aggregated with the policy loss, so ``alpha > 0`` rewards entropy (``J + alpha H``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlvr_lightning.components._validate import check_range
from rlvr_lightning.components.base import EntropyBonus


def _bonus(entropy: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """``-alpha * entropy`` on valid tokens, 0 on padding; ``entropy`` and ``mask`` are ``(B, T)``."""
    return torch.where(mask, -alpha * entropy, torch.zeros((), dtype=entropy.dtype, device=entropy.device))


@EntropyBonus.register("none")
class NoEntropyBonus(EntropyBonus):
    """No entropy term (the paper's default): entropy is only logged; calling it returns zeros."""

    enabled = False

    def __call__(self, entropy: Tensor, mask: Tensor) -> Tensor:
        """Zeros like ``entropy``, shape ``(B, T)``."""
        return torch.zeros_like(entropy)


@EntropyBonus.register("constant")
class ConstantEntropyBonus(EntropyBonus):
    """Constant entropy bonus ``J + alpha H`` (Williams & Peng 1991; the paper tries alpha 0.001 and 0.002).

    A negative alpha penalizes entropy and speeds the collapse, as the paper shows.

    Args:
        alpha: the coefficient (any finite float).
    """

    def __init__(self, alpha: float = 0.001) -> None:
        self.alpha = check_range(
            type(self).__name__,
            "alpha",
            alpha,
            low=-float("inf"),
            high=float("inf"),
            low_open=True,
            high_open=True,
        )

    def __call__(self, entropy: Tensor, mask: Tensor) -> Tensor:
        """``-alpha * entropy``, shape ``(B, T)``, 0 on padding; ``entropy`` and ``mask`` are ``(B, T)``."""
        return _bonus(entropy, mask, self.alpha)

    def log_values(self) -> dict[str, float]:
        return {"entropy_coef": self.alpha}


@EntropyBonus.register("adaptive")
class AdaptiveEntropyBonus(EntropyBonus):
    """Adaptive entropy regularization (Ada-Ent-Reg; the adaptive entropy control of Skywork-OR1, 2505.22312).

    After each rollout batch, with its measured mean token entropy ``H``:
    ``alpha <- clip(alpha + step, alpha_min, alpha_max)`` if ``H < target`` else
    ``clip(alpha - step, alpha_min, alpha_max)``: the coefficient rises while entropy is below target.

    Args:
        target: target mean token entropy; ``>= 0``.
        alpha0: initial coefficient; in ``[alpha_min, alpha_max]``.
        step: change of alpha per rollout batch; ``>= 0``.
        alpha_min: lower bound of alpha.
        alpha_max: upper bound of alpha; ``>= alpha_min``.
    """

    def __init__(
        self,
        target: float = 0.2,
        alpha0: float = 0.0,
        step: float = 0.0005,
        alpha_min: float = 0.0,
        alpha_max: float = 0.01,
    ) -> None:
        name = type(self).__name__
        self.target = check_range(name, "target", target, low=0.0)
        self.step = check_range(name, "step", step, low=0.0)
        self.alpha_min = float(alpha_min)
        if alpha_max < self.alpha_min:
            raise ValueError(f"{name}: alpha_max must be >= alpha_min = {self.alpha_min}, got {alpha_max}")
        self.alpha_max = float(alpha_max)
        self.alpha = check_range(name, "alpha0", alpha0, low=self.alpha_min, high=self.alpha_max)

    def __call__(self, entropy: Tensor, mask: Tensor) -> Tensor:
        """``-alpha * entropy``, shape ``(B, T)``, 0 on padding; ``entropy`` and ``mask`` are ``(B, T)``."""
        return _bonus(entropy, mask, self.alpha)

    def update(self, measured_entropy: float) -> None:
        """Move alpha one step toward holding the entropy at ``target``."""
        delta = self.step if float(measured_entropy) < self.target else -self.step
        self.alpha = min(max(self.alpha + delta, self.alpha_min), self.alpha_max)

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = float(state["alpha"])

    def log_values(self) -> dict[str, float]:
        return {"entropy_coef": self.alpha}
