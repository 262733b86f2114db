"""Built-in KL penalties toward the reference policy: none (the paper's default) and k1 / k2 / k3 estimators.

Each maps ``(logp, ref_logp, mask)``, all ``(B, T)``, to ``coef * KL`` per token ``(B, T)``, 0 on padding. The
estimators (Schulman, "Approximating KL divergence", 2020) live in
:func:`rlvr_lightning.functional.kl_penalty`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.components._validate import check_choice, check_range
from rlvr_lightning.components.base import KLPenalty


@KLPenalty.register("none")
class NoKL(KLPenalty):
    """No KL term: no reference model is loaded (``needs_reference`` False); calling it returns zeros."""

    needs_reference = False

    def __call__(self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor) -> Tensor:
        """Zeros like ``logp``, shape ``(B, T)`` (``ref_logp`` may be ``None``)."""
        return torch.zeros_like(logp)


@KLPenalty.register("kl")
class KL(KLPenalty):
    """Per-token KL estimate toward the reference, scaled by ``coef``.

    With ``d = ref_logp - logp``: k1 ``= -d``; k2 ``= d^2 / 2``; k3 ``= exp(d) - d - 1`` (GRPO's, >= 0).

    Args:
        kind: the estimator, one of ``"k1"``, ``"k2"``, ``"k3"``.
        coef: the penalty coefficient beta; ``>= 0``.
    """

    def __init__(self, kind: Literal["k1", "k2", "k3"] = "k3", coef: float = 0.001) -> None:
        self.kind = check_choice(type(self).__name__, "kind", kind, F.KL_KINDS)
        self.coef = check_range(type(self).__name__, "coef", coef, low=0.0)

    def __call__(self, logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
        """Scaled per-token KL.

        Args:
            logp: current policy log-probs (carry gradients), shape ``(B, T)``.
            ref_logp: reference policy log-probs, shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.

        Returns:
            ``coef * KL``, shape ``(B, T)``, 0 on padding.
        """
        kl = F.kl_penalty(logp, ref_logp, kind=self.kind)
        return torch.where(mask, self.coef * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))

    def log_values(self) -> dict[str, float]:
        return {"kl_coef": self.coef}
