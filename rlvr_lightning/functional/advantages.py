"""Advantage estimators for outcome rewards: GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline and signed rewards.

All are vectorized over groups (:func:`~rlvr_lightning.functional.group_stats`), accept arbitrary integer group
ids, rows in any order and groups of different sizes. Conventions that differ from verl 0.9.1 are stated per function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr_lightning.functional._masked import masked_whiten
from rlvr_lightning.functional.groups import group_stats


def _group_stats(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each row's group mean, unbiased group variance, group size and all-scores-equal flag, each shape ``(B,)``."""
    s = group_stats(scores, group_ids)
    return s.mean[s.index], s.var[s.index], s.count[s.index], s.equal[s.index]


def grpo_advantages(
    scores: Tensor, group_ids: Tensor, *, scale_by_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO advantage of each response relative to its group (Shao et al. 2024, DeepSeekMath, arXiv
    2402.03300).

    .. math:: A_i = (r_i - \\mathrm{mean}_g(r)) / (\\mathrm{std}_g(r) + \\epsilon)

    ``std`` is the unbiased (``G - 1``) standard deviation, as in verl. ``scale_by_std=False`` gives Dr. GRPO
    (Liu et al. 2025, arXiv 2503.20783): :math:`A_i = r_i - \\mathrm{mean}_g(r)`.

    A group whose scores are all equal gets exactly 0 (no rounding residue). A singleton group gets 0; verl
    0.9.1 instead gives a singleton mean 0 and std 1, i.e. :math:`A = r / (1 + \\epsilon)`.

    Args:
        scores: one scalar reward per response, shape ``(B,)``.
        group_ids: integer group (prompt) id of each response, shape ``(B,)``; any values, any row order.
        scale_by_std: divide by the group standard deviation (GRPO) or not (Dr. GRPO).
        eps: added to the standard deviation.

    Returns:
        Advantages, shape ``(B,)``, floating dtype of ``scores`` (default dtype for integer scores).

    Example:
        >>> grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([7, 7, 7, 7]), eps=0.0)
        tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
        >>> scores, groups = torch.tensor([1.0, 0.0, 2.0, 2.0]), torch.tensor([0, 0, 1, 1])
        >>> grpo_advantages(scores, groups, scale_by_std=False)
        tensor([ 0.5000, -0.5000,  0.0000,  0.0000])
    """
    mean, var, count, equal = _group_stats(scores, group_ids)
    adv = scores.to(mean.dtype) - mean
    if scale_by_std:
        adv = adv / (var.sqrt() + eps)
    return torch.where(equal | (count < 2), torch.zeros_like(adv), adv)


def rloo_advantages(scores: Tensor, group_ids: Tensor) -> Tensor:
    """REINFORCE leave-one-out advantage (Ahmadian et al. 2024, arXiv 2402.14740; Kool et al. 2019).

    .. math:: A_i = r_i - \\frac{1}{G-1}\\sum_{j \\ne i} r_j = \\frac{G}{G-1}(r_i - \\mathrm{mean}_g(r))

    A singleton group gets 0 (as in verl 0.9.1, which leaves the raw score there: here it is 0); a group of
    equal scores gets exactly 0.

    Args:
        scores: one scalar reward per response, shape ``(B,)``.
        group_ids: integer group id of each response, shape ``(B,)``.

    Returns:
        Advantages, shape ``(B,)``.

    Example:
        >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3, 3, 3]))
        tensor([ 1.0000, -0.5000, -0.5000])
    """
    mean, _, count, equal = _group_stats(scores, group_ids)
    adv = (scores.to(mean.dtype) - mean) * count / (count - 1).clamp(min=1)
    return torch.where(equal | (count < 2), torch.zeros_like(adv), adv)


def reinforce_pp_baseline_advantages(
    scores: Tensor, group_ids: Tensor, mask: Tensor, *, eps: float = 1e-8
) -> Tensor:
    """REINFORCE++-baseline advantage (Hu et al. 2025, arXiv 2501.03262), as verl's
    ``reinforce_plus_plus_baseline``.

    The group mean is subtracted, the result is broadcast to every valid token, then whitened over all valid
    tokens of the batch (mean and unbiased variance of the token values):

    .. math:: A_{i,t} = \\mathrm{whiten}_{\\text{batch tokens}}(r_i - \\mathrm{mean}_g(r))

    A singleton group's centered score is 0 here (verl uses a baseline of 0 for it, i.e. keeps ``r``).

    Args:
        scores: one scalar reward per response, shape ``(B,)``.
        group_ids: integer group id of each response, shape ``(B,)``.
        mask: True on real response tokens, shape ``(B, T)``.
        eps: added to the batch variance before the square root.

    Returns:
        Advantages, shape ``(B, T)``, 0 on padding.

    Example:
        >>> m = torch.tensor([[True, True], [True, False]])
        >>> reinforce_pp_baseline_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), m)
        tensor([[ 0.5774,  0.5774],
                [-1.1547,  0.0000]])
    """
    if mask.dim() != 2 or mask.shape[0] != scores.shape[0]:
        raise ValueError(f"mask must have shape (B, T) with B={scores.shape[0]}, got {tuple(mask.shape)}")
    mean, _, count, _ = _group_stats(scores, group_ids)
    centered = torch.where(count < 2, torch.zeros_like(mean), scores.to(mean.dtype) - mean)
    tokens = centered.unsqueeze(-1).expand(mask.shape)
    return masked_whiten(tokens, mask, eps=eps)


def signed_reward_advantages(scores: Tensor, *, threshold: float = 0.5) -> Tensor:
    """The reward's sign as the advantage, with no baseline: +1 for a correct response, -1 otherwise.

    The advantage of W-REINFORCE (Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM
    Reasoning", arXiv 2506.01347), whose objective ``lambda * L_PSR + L_NSR`` is this advantage with positive
    samples weighted by ``lambda`` (PAR with a constant lambda, 0.1 in that paper).

    .. math:: A_i = +1 \\text{ if } r_i \\ge \\tau, \\quad -1 \\text{ otherwise}

    Args:
        scores: one scalar reward per response, shape ``(B,)``.
        threshold: scores at or above it count as correct.

    Returns:
        Advantages, shape ``(B,)``, in the scores' floating dtype.

    Example:
        >>> signed_reward_advantages(torch.tensor([1.0, 0.0, 0.7]))
        tensor([ 1., -1.,  1.])
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (B,), got {tuple(scores.shape)}")
    x = scores if scores.dtype.is_floating_point else scores.to(torch.get_default_dtype())
    return torch.where(x >= threshold, torch.ones_like(x), -torch.ones_like(x))
