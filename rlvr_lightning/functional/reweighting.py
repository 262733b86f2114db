"""Token weights and token selections used by the reweighting strategies (PAR and the entropy baselines).

Weight functions return float ``(B, T)`` tensors (0 on padding); selection functions return bool ``(B, T)``
masks (False on padding). Selections that take "a fraction of the valid tokens" rank tokens without a host
sync, so they run inside a compiled or asynchronous step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr_lightning.functional._masked import masked_mean


def par_weights(advantages: Tensor, mask: Tensor, *, lam: float | Tensor) -> Tensor:
    """Positive-Advantage Reweighting (arXiv 2511.05993): weight ``lam`` on tokens with A>0, 1 on the others.

    .. math:: w_{it} = \\lambda\\,[A_{it} > 0] + [A_{it} \\le 0]

    Args:
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        lam: the weight of positive-advantage tokens, in ``[0, 1]`` (a float or a 0-dim tensor).

    Returns:
        Weights, shape ``(B, T)``, dtype of ``advantages``, 0 on padding.

    Example:
        >>> adv, mask = torch.tensor([[1.0, -1.0, 0.0, 2.0]]), torch.tensor([[True, True, True, False]])
        >>> par_weights(adv, mask, lam=0.3)
        tensor([[0.3000, 1.0000, 1.0000, 0.0000]])
    """
    if not isinstance(lam, Tensor) and not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    lam_t = torch.as_tensor(lam, dtype=advantages.dtype, device=advantages.device)
    one = torch.ones((), dtype=advantages.dtype, device=advantages.device)
    w = torch.where(advantages > 0, lam_t, one)
    return torch.where(mask.bool(), w, torch.zeros_like(w))


def covariance_score(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-token covariance score of Cui et al. 2025 (arXiv 2505.22617), centered over the valid tokens.

    .. math:: c_{it} = (A_{it} - \\bar A)(\\log\\pi_{it} - \\overline{\\log\\pi})

    Args:
        logp: current log-probs of the sampled tokens, shape ``(B, T)`` (pass it detached for selection).
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.

    Returns:
        Scores, shape ``(B, T)``, 0 on padding.

    Example:
        >>> logp, adv = torch.tensor([[-1.0, -3.0]]), torch.tensor([[1.0, -1.0]])
        >>> covariance_score(logp, adv, torch.ones(1, 2, dtype=torch.bool))
        tensor([[1., 1.]])
    """
    valid = mask.bool()
    c = (advantages - masked_mean(advantages, valid)) * (logp - masked_mean(logp, valid))
    return torch.where(valid, c, torch.zeros_like(c))


def sign_mask(advantages: Tensor, mask: Tensor, *, keep: str) -> Tensor:
    """Tokens of one advantage sign: ``keep="nonnegative"`` (A>=0) or ``keep="nonpositive"`` (A<=0).

    Training on one sign only is the "positive/negative samples only" ablation (e.g. Zhu et al. 2025,
    arXiv 2506.01347).

    Args:
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        keep: ``"nonnegative"`` or ``"nonpositive"``.

    Returns:
        Bool selection, shape ``(B, T)``.

    Example:
        >>> adv = torch.tensor([[1.0, 0.0, -1.0]])
        >>> sign_mask(adv, torch.ones(1, 3, dtype=torch.bool), keep="nonpositive")
        tensor([[False,  True,  True]])
    """
    if keep == "nonnegative":
        sel = advantages >= 0
    elif keep == "nonpositive":
        sel = advantages <= 0
    else:
        raise ValueError(f"keep must be 'nonnegative' or 'nonpositive', got {keep!r}")
    return sel & mask.bool()


def random_drop_positive(
    advantages: Tensor, mask: Tensor, *, drop_frac: float, generator: torch.Generator | None = None
) -> Tensor:
    """Keep-mask that drops each positive-advantage token independently with probability ``drop_frac``.

    Args:
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        drop_frac: probability of dropping a token with A>0, in ``[0, 1]``.
        generator: random generator (on the device of ``advantages``) for reproducibility.

    Returns:
        Bool keep-mask, shape ``(B, T)``: every valid token with A<=0, and the surviving A>0 tokens.

    Example:
        >>> adv, m = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool)
        >>> random_drop_positive(adv, m, drop_frac=1.0)
        tensor([[False,  True]])
    """
    if not 0.0 <= drop_frac <= 1.0:
        raise ValueError(f"drop_frac must be in [0, 1], got {drop_frac}")
    u = torch.rand(advantages.shape, generator=generator, device=advantages.device)
    return mask.bool() & ((advantages <= 0) | (u >= drop_frac))


def _rank_select(score: Tensor, candidates: Tensor, count: Tensor) -> Tensor:
    """The ``count`` candidates with the largest ``score`` (ties: earlier position first), as a bool mask."""
    flat = torch.where(candidates, score, torch.full_like(score, float("-inf"))).reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return candidates & (rank.reshape(score.shape) < count)


def top_entropy_mask(entropy: Tensor, mask: Tensor, *, rho: float = 0.2) -> Tensor:
    """The top ``rho`` fraction of the batch's valid tokens by entropy (Wang et al. 2025, arXiv 2506.01939).

    The number kept is :math:`\\lceil \\rho\\, N_{valid} \\rceil`; ties go to the earlier token.

    Args:
        entropy: per-token entropy, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        rho: fraction of valid tokens to keep, in ``(0, 1]``.

    Returns:
        Bool selection, shape ``(B, T)``.

    Example:
        >>> ent, mask = torch.tensor([[0.1, 2.0, 0.5, 9.0]]), torch.tensor([[True, True, True, False]])
        >>> top_entropy_mask(ent, mask, rho=0.5)
        tensor([[False,  True,  True, False]])
    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    valid = mask.bool()
    count = torch.ceil(valid.sum() * rho - 1e-9)
    return _rank_select(entropy.to(torch.float32), valid, count)


def clip_cov_select(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_ratio: float = 2e-4,
    lower: float = 1.0,
    upper: float = 5.0,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clip-Cov selection (Cui et al. 2025, arXiv 2505.22617; verl's ``clip_cov`` loss): a few random tokens of
    the covariance band.

    Candidates are valid tokens with covariance score strictly inside ``(lower, upper)`` (see
    :func:`covariance_score`), minus ``exclude`` (verl excludes tokens already clipped by PPO). Among them
    :math:`\\max(1, \\lfloor \\text{clip\\_ratio}\\cdot N_{valid} \\rfloor)` are drawn uniformly at random: one
    uniform key per position of ``logp`` (row-major, from ``generator``), the candidates with the largest keys win.

    Args:
        logp: current log-probs, shape ``(B, T)`` (used detached).
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        clip_ratio: fraction of the valid tokens to select, ``> 0``.
        lower: lower bound of the covariance band.
        upper: upper bound of the covariance band.
        exclude: optional bool ``(B, T)`` of tokens never selected.
        generator: random generator for the draw.

    Returns:
        Bool selection, shape ``(B, T)``.

    Example:
        >>> logp, adv = torch.tensor([[-1.0, -3.0, -2.0]]), torch.tensor([[3.0, -3.0, 0.0]])
        >>> clip_cov_select(logp, adv, torch.ones(1, 3, dtype=torch.bool), clip_ratio=0.5).sum()
        tensor(1)
    """
    if not clip_ratio > 0:
        raise ValueError(f"clip_ratio must be > 0, got {clip_ratio}")
    valid = mask.bool()
    cov = covariance_score(logp.detach(), advantages.detach(), valid)
    cand = valid & (cov > lower) & (cov < upper)
    if exclude is not None:
        cand = cand & ~exclude.bool()
    count = torch.clamp(torch.floor(valid.sum() * clip_ratio), min=1)
    keys = torch.rand(cov.shape, generator=generator, device=cov.device)
    return _rank_select(keys, cand, count)


def clip_cov_weights(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_ratio: float = 2e-4,
    lower: float = 1.0,
    upper: float = 5.0,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clip-Cov weights: 0 on the tokens of :func:`clip_cov_select` (no gradient) and on padding, 1 elsewhere.

    Args:
        logp: current log-probs, shape ``(B, T)`` (used detached).
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        clip_ratio: fraction of the valid tokens to drop, ``> 0``.
        lower: lower bound of the covariance band.
        upper: upper bound of the covariance band.
        exclude: optional bool ``(B, T)`` of tokens never selected.
        generator: random generator for the draw.

    Returns:
        Weights, shape ``(B, T)``, dtype of ``advantages``: 0 on selected tokens and padding, 1 elsewhere.

    Example:
        >>> logp, adv = torch.tensor([[-1.0, -3.0, -2.0]]), torch.tensor([[3.0, -3.0, 0.0]])
        >>> mask = torch.ones(1, 3, dtype=torch.bool)
        >>> w = clip_cov_weights(logp, adv, mask, clip_ratio=0.5)
        >>> w.sum()
        tensor(2.)
    """
    drop = clip_cov_select(logp, advantages, mask, clip_ratio=clip_ratio, lower=lower, upper=upper,
                           exclude=exclude, generator=generator)
    w = torch.where(drop, 0.0, 1.0).to(advantages.dtype)
    return torch.where(mask.bool(), w, torch.zeros_like(w))


def kl_cov_select(logp: Tensor, advantages: Tensor, mask: Tensor, *, k_ratio: float = 2e-4) -> Tensor:
    """KL-Cov selection (Cui et al. 2025, arXiv 2505.22617): the top ``k_ratio`` valid tokens by covariance
    score.

    The number selected is :math:`\\max(1, \\lfloor k\\_ratio\\cdot N_{valid} \\rfloor)`, as in verl's
    ``kl_cov``.

    Args:
        logp: current log-probs, shape ``(B, T)`` (used detached).
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        k_ratio: fraction of valid tokens to select, ``> 0``.

    Returns:
        Bool selection, shape ``(B, T)``.

    Example:
        >>> logp, adv = torch.tensor([[-1.0, -3.0, -2.0]]), torch.tensor([[3.0, -3.0, 0.0]])
        >>> mask = torch.ones(1, 3, dtype=torch.bool)
        >>> kl_cov_select(logp, adv, mask, k_ratio=0.4)
        tensor([[ True, False, False]])
    """
    if not k_ratio > 0:
        raise ValueError(f"k_ratio must be > 0, got {k_ratio}")
    valid = mask.bool()
    cov = covariance_score(logp.detach(), advantages.detach(), valid)
    count = torch.clamp(torch.floor(valid.sum() * k_ratio), min=1)
    return _rank_select(cov.to(torch.float32), valid, count)


def kl_cov_penalty(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    k_ratio: float = 2e-4,
    coef: float = 1.0,
    selection: Tensor | None = None,
) -> Tensor:
    """KL-Cov penalty :math:`\\text{coef}\\,|\\log\\pi - \\log\\pi_{old}|` on the tokens of
    :func:`kl_cov_select` (or of ``selection``).

    Add it to the per-token policy loss before aggregation (verl's ``kl_cov`` adds it to the unclipped
    :math:`-rA`, with ``ppo_kl_coef = 1``). Differentiable in ``logp``.

    Args:
        logp: current log-probs (with gradients), shape ``(B, T)``.
        old_logp: sampling-policy log-probs, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        k_ratio: fraction of valid tokens penalized.
        coef: penalty coefficient.
        selection: bool ``(B, T)`` of the penalized tokens, chosen beforehand (e.g. over a whole mini-batch,
            across micro-batches and ranks); None: ``kl_cov_select`` of these tokens.

    Returns:
        Per-token penalty, shape ``(B, T)``, 0 off the selection.

    Example:
        >>> logp, adv = torch.tensor([[-1.0, -3.0, -2.0]]), torch.tensor([[3.0, -3.0, 0.0]])
        >>> mask = torch.ones(1, 3, dtype=torch.bool)
        >>> old = torch.tensor([[-1.5, -3.0, -2.0]])
        >>> kl_cov_penalty(logp, old, adv, mask, k_ratio=0.4)
        tensor([[0.5000, 0.0000, 0.0000]])
    """
    sel = kl_cov_select(logp, advantages, mask, k_ratio=k_ratio) if selection is None else selection.bool()
    pen = coef * (logp - old_logp).abs()
    return torch.where(sel, pen, torch.zeros_like(pen))
