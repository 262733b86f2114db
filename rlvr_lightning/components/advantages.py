"""Built-in advantage estimators: GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline and signed rewards (W-REINFORCE).

Each turns sequence scores ``(B,)`` and group ids ``(B,)`` into per-token advantages ``(B, T)``, 0 on padding.
The math lives in :mod:`rlvr_lightning.functional.advantages`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.components._validate import check_range
from rlvr_lightning.components.base import Advantage


def _broadcast(adv: Tensor, mask: Tensor) -> Tensor:
    """Sequence advantages ``(B,)`` spread over the valid tokens of ``mask`` ``(B, T)``; 0 on padding."""
    adv = adv.unsqueeze(-1).expand(mask.shape)
    return torch.where(mask, adv, torch.zeros((), dtype=adv.dtype, device=adv.device))


@Advantage.register("grpo")
class GRPO(Advantage):
    """Group-normalized advantage (Shao et al. 2024, DeepSeekMath): ``A_i = (r_i - mean_g) / (std_g + eps)``.

    ``std_g`` is the unbiased standard deviation of the scores of sample ``i``'s group. A group whose scores
    are all equal, or a group of one, gets 0, so a group size ``G >= 2`` is needed for any signal.

    Args:
        eps: added to the group standard deviation; must be > 0.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = check_range(type(self).__name__, "eps", eps, low=0.0, low_open=True)

    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Per-token advantages.

        Args:
            scores: sequence rewards, shape ``(B,)``.
            group_ids: group (prompt) index of each sequence, shape ``(B,)``.
            mask: True on real response tokens, shape ``(B, T)``.

        Returns:
            Advantages, shape ``(B, T)``, 0 on padding.
        """
        return _broadcast(F.grpo_advantages(scores, group_ids, scale_by_std=True, eps=self.eps), mask)


@Advantage.register("drgrpo")
class DrGRPO(Advantage):
    """Dr. GRPO advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``A_i = r_i - mean_g``.

    No division by the group standard deviation, which biases updates toward too-easy and too-hard prompts.
    Pair it with a constant-normalizer aggregation (``seq-mean-token-sum-norm``) for the full Dr. GRPO loss.
    """

    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Advantages ``(B, T)`` from ``scores`` ``(B,)``, ``group_ids`` ``(B,)`` and ``mask`` ``(B, T)``."""
        return _broadcast(F.grpo_advantages(scores, group_ids, scale_by_std=False), mask)


@Advantage.register("rloo")
class RLOO(Advantage):
    """REINFORCE leave-one-out (Ahmadian et al. 2024): ``A_i = r_i - mean_{j in g, j != i} r_j``.

    A group of one gets 0, so a group size ``G >= 2`` is needed.
    """

    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Advantages ``(B, T)`` from ``scores`` ``(B,)``, ``group_ids`` ``(B,)`` and ``mask`` ``(B, T)``."""
        return _broadcast(F.rloo_advantages(scores, group_ids), mask)


@Advantage.register("reinforce_pp_baseline")
class ReinforcePPBaseline(Advantage):
    """REINFORCE++ with a group baseline (Hu et al. 2025): ``r_i - mean_g``, whitened over the batch's tokens.

    Uses the group mean as its baseline, so like GRPO it needs groups (``needs_groups`` True).

    Args:
        eps: added to the batch token standard deviation when whitening; must be > 0.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = check_range(type(self).__name__, "eps", eps, low=0.0, low_open=True)

    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Advantages ``(B, T)`` from ``scores`` ``(B,)``, ``group_ids`` ``(B,)`` and ``mask`` ``(B, T)``."""
        adv = F.reinforce_pp_baseline_advantages(scores, group_ids, mask, eps=self.eps)
        return torch.where(mask, adv, torch.zeros((), dtype=adv.dtype, device=adv.device))


@Advantage.register("signed_reward")
class SignedReward(Advantage):
    """The reward's sign, no baseline (W-REINFORCE, Zhu et al. 2025, arXiv 2506.01347): ``A_i = +1`` if
    ``r_i >= threshold`` else ``-1``.

    With ``PAR(lam=0.1)`` and ``NoClip`` this is W-REINFORCE's ``0.1 * L_PSR + L_NSR`` (``configs/w_reinforce.yaml``);
    with ``NegativeOnly`` it is negative sample reinforcement alone. Needs no groups.

    Args:
        threshold: scores at or above it count as correct.
    """

    needs_groups = False

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)

    def __call__(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Advantages ``(B, T)`` from ``scores`` ``(B,)`` and ``mask`` ``(B, T)`` (``group_ids`` unused)."""
        return _broadcast(F.signed_reward_advantages(scores, threshold=self.threshold), mask)
