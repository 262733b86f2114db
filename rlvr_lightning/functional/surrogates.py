"""Per-token policy-gradient surrogates: PPO clip (Clip-Higher, dual clip), Clip-Free, CISPO and GSPO.

Each takes ``(logp, old_logp, advantages, mask)`` of shape ``(B, T)`` and returns ``(loss (B, T), stats)``:
the loss is already negated (minimize it) and is 0 on padding; ``stats`` holds detached 0-dim tensors averaged
over the valid tokens: ``clip_frac`` (the clipped branch is active), ``clip_frac_low`` (ratio below ``1 -
eps_low`` with A<0), ``clip_frac_high`` (ratio above ``1 + eps_high`` with A>0), ``dual_clip_frac`` and
``approx_kl`` (``mean(old_logp - logp)``, verl's ``ppo_kl``). Numbers follow verl 0.9.1's ``core_algos``
policy losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr_lightning.functional._masked import masked_mean

_LOG_RATIO_BOUND = 20.0


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0.0 <= eps_low <= 1.0:
        raise ValueError(f"eps_low must be in [0, 1], got {eps_low}")
    if eps_high < 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")


def _zero_pad(loss: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), loss, torch.zeros((), dtype=loss.dtype, device=loss.device))


def _frac(flag: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(flag.to(torch.float32), mask).detach()


def _base_stats(log_ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((), dtype=torch.float32, device=log_ratio.device)
    return {
        "clip_frac": zero,
        "clip_frac_low": zero,
        "clip_frac_high": zero,
        "dual_clip_frac": zero,
        "approx_kl": masked_mean(-log_ratio, mask).detach(),
    }


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017) with asymmetric bounds and optional dual clip.

    .. math:: \\ell = -\\min(r A, \\mathrm{clip}(r, 1-\\epsilon_{low}, 1+\\epsilon_{high}) A),\\quad
        r = e^{\\mathrm{clamp}(\\log\\pi - \\log\\pi_{old}, -20, 20)}

    ``eps_high > eps_low`` is DAPO's Clip-Higher (Yu et al. 2025, arXiv 2503.14476). With ``dual_clip=c`` (Ye
    et al. 2020, arXiv 1912.09729) the loss of a token with A<0 is further capped: :math:`\\ell = \\min(\\ell,
    -cA)`, exactly verl's ``compute_policy_loss_vanilla`` (which always applies it with ``clip_ratio_c=3``;
    here ``None`` turns it off).

    Args:
        logp: log-probs of the sampled tokens under the current policy, shape ``(B, T)``.
        old_logp: log-probs under the policy that sampled them, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        eps_low: lower clip range, in ``[0, 1]``.
        eps_high: upper clip range, ``>= 0``.
        dual_clip: the dual-clip constant ``c > 1``, or ``None``.

    Returns:
        ``(loss, stats)``: per-token loss ``(B, T)``, 0 on padding, and the statistics listed in the module
        doc.

    Example:
        >>> lp = torch.log(torch.tensor([[1.5, 0.5]]))
        >>> adv, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool)
        >>> loss, st = clipped_surrogate(lp, torch.zeros(1, 2), adv, mask)
        >>> loss
        tensor([[-1.2000,  0.8000]])
        >>> st["clip_frac"], st["clip_frac_high"], st["clip_frac_low"]
        (tensor(1.), tensor(0.5000), tensor(0.5000))
    """
    _check_eps(eps_low, eps_high)
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip}")
    log_ratio = torch.clamp(logp - old_logp, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    clipped = loss2 > loss1
    loss = torch.maximum(loss1, loss2)
    stats = _base_stats(log_ratio, mask)
    stats["clip_frac"] = _frac(clipped, mask)
    stats["clip_frac_low"] = _frac(clipped & (advantages < 0), mask)
    stats["clip_frac_high"] = _frac(clipped & (advantages > 0), mask)
    if dual_clip is not None:
        loss3 = -advantages * dual_clip
        negative = advantages < 0
        stats["dual_clip_frac"] = _frac((loss > loss3) & negative, mask)
        loss = torch.where(negative, torch.minimum(loss, loss3), loss)
    return _zero_pad(loss, mask), stats


def unclipped_surrogate(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance-weighted policy gradient without clipping (Clip-Free): :math:`\\ell = -r A`.

    The log-ratio is clamped to ``[-20, 20]`` as in :func:`clipped_surrogate`; all clip fractions are 0.

    Args:
        logp: current log-probs, shape ``(B, T)``.
        old_logp: sampling-policy log-probs, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.

    Returns:
        ``(loss (B, T), stats)``.

    Example:
        >>> lp, mask = torch.log(torch.tensor([[2.0]])), torch.ones(1, 1, dtype=torch.bool)
        >>> loss, _ = unclipped_surrogate(lp, torch.zeros(1, 1), torch.ones(1, 1), mask)
        >>> loss
        tensor([[-2.]])
    """
    log_ratio = torch.clamp(logp - old_logp, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    loss = -advantages * torch.exp(log_ratio)
    return _zero_pad(loss, mask), _base_stats(log_ratio, mask)


def cispo_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): a REINFORCE loss weighted by the clipped, stop-gradient ratio.

    .. math:: \\ell = -\\mathrm{sg}(\\mathrm{clip}(r, 1-\\epsilon_{low}, 1+\\epsilon_{high}))\\, A \\log\\pi

    Every token keeps a gradient (only its weight is clipped). Defaults follow verl 0.9.1, which takes both
    bounds from ``clip_ratio`` (0.2); the paper effectively leaves the lower side open (``eps_low=1.0``) and
    tunes ``eps_high``. ``clip_frac`` counts tokens whose ratio was clipped (either side, any advantage sign).

    Args:
        logp: current log-probs, shape ``(B, T)``.
        old_logp: sampling-policy log-probs, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        eps_low: lower clip range of the weight, in ``[0, 1]``.
        eps_high: upper clip range of the weight, ``>= 0``.

    Returns:
        ``(loss (B, T), stats)``.

    Example:
        >>> lp = torch.log(torch.tensor([[0.5, 2.0]]))
        >>> mask = torch.ones(1, 2, dtype=torch.bool)
        >>> loss, st = cispo_surrogate(lp, torch.zeros(1, 2), torch.ones(1, 2), mask)
        >>> loss
        tensor([[ 0.5545, -0.8318]])
        >>> st["clip_frac"]
        tensor(1.)
    """
    _check_eps(eps_low, eps_high)
    log_ratio = torch.clamp(logp - old_logp, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    weight = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high).detach()
    loss = -weight * advantages * logp
    stats = _base_stats(log_ratio, mask)
    low, high = ratio < 1.0 - eps_low, ratio > 1.0 + eps_high
    stats["clip_frac"] = _frac(low | high, mask)
    stats["clip_frac_low"] = _frac(low, mask)
    stats["clip_frac_high"] = _frac(high, mask)
    return _zero_pad(loss, mask), stats


def gspo_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): PPO clipping on a length-normalized sequence ratio.

    .. math:: s_i = \\exp\\Big(\\tfrac{1}{|y_i|}\\sum_t (\\log\\pi_{i,t} - \\log\\pi^{old}_{i,t})\\Big),\\quad
        s_{i,t} = \\mathrm{sg}(s_i)\\, \\pi_{i,t} / \\mathrm{sg}(\\pi_{i,t}),\\quad
        \\ell = -\\min(s_{i,t} A, \\mathrm{clip}(s_{i,t}, 1-\\epsilon_{low}, 1+\\epsilon_{high}) A)

    As in verl 0.9.1's ``gspo`` loss, :math:`\\log s_{i,t}` is clamped above at 10 and the length is clamped
    to at least 1. The paper aggregates with "seq-mean-token-mean".

    Args:
        logp: current log-probs, shape ``(B, T)``.
        old_logp: sampling-policy log-probs, shape ``(B, T)``.
        advantages: per-token advantages (constant within a sequence in the paper), shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        eps_low: lower clip range of the sequence ratio.
        eps_high: upper clip range of the sequence ratio.

    Returns:
        ``(loss (B, T), stats)``.

    Example:
        >>> lp, old = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -2.0]])
        >>> loss, st = gspo_surrogate(lp, old, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
        >>> loss, st["clip_frac"]
        (tensor([[-1., -1.]]), tensor(0.))
    """
    _check_eps(eps_low, eps_high)
    valid = mask.bool()
    log_ratio = logp - old_logp
    lengths = valid.sum(dim=-1).clamp(min=1).to(logp.dtype)
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    seq_log_ratio = torch.where(valid, log_ratio, zero).sum(dim=-1) / lengths
    log_s = logp - logp.detach() + seq_log_ratio.detach().unsqueeze(-1)
    s = torch.exp(torch.clamp(log_s, max=10.0))
    loss1 = -advantages * s
    loss2 = -advantages * torch.clamp(s, 1.0 - eps_low, 1.0 + eps_high)
    clipped = loss2 > loss1
    stats = _base_stats(log_ratio, mask)
    stats["clip_frac"] = _frac(clipped, mask)
    stats["clip_frac_low"] = _frac(clipped & (advantages < 0), mask)
    stats["clip_frac_high"] = _frac(clipped & (advantages > 0), mask)
    return _zero_pad(torch.maximum(loss1, loss2), mask), stats
