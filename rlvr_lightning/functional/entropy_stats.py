"""Entropy statistics of a rollout batch: mean token entropy split by advantage sign, and entropy dynamics.

Two quantities of "Revisiting Entropy in RL for Large Reasoning Models" (arXiv 2511.05993):

* the mean token entropy over all valid tokens and over the tokens with ``A > 0`` / ``A < 0``;
* the covariance of the sampled token's log-prob and its advantage (Cui et al., arXiv 2505.22617), which
  drives the entropy change of a softmax policy under policy gradient, ``dH ~ -Cov(log pi(a), A)``, split into
  the part contributed by positive-advantage tokens and the part from the others.

Both are written as sufficient statistics (sums and counts, ``_x_update``) and a reduction of those
(``_x_compute``), so the metric classes in :mod:`rlvr_lightning.metrics` keep fixed-size sum states that are
exact under gradient accumulation and data parallelism. Shapes: B sequences, T response tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["covariance_stats", "token_entropy_stats"]


def _check_same_shape(**tensors: Tensor | None) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}; all must be (B, T)")


# --------------------------------------------------------------------------------------------------- entropy


def _token_entropy_update(entropy: Tensor, mask: Tensor, advantages: Tensor | None = None) -> Tensor:
    """Sufficient statistics of the split token entropy.

    Args:
        entropy: per-token entropy, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        advantages: per-token advantage, shape ``(B, T)``, or ``None`` (then the split sums are 0).

    Returns:
        float64 tensor of shape ``(6,)``: ``[sum_all, n_all, sum_pos, n_pos, sum_neg, n_neg]``.
    """
    _check_same_shape(entropy=entropy, mask=mask, advantages=advantages)
    m = mask.bool()
    h = entropy.detach().to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=h.device)
    out = [torch.where(m, h, zero).sum(), m.sum().to(torch.float64)]
    if advantages is None:
        out += [zero, zero, zero, zero]
    else:
        a = advantages.detach()
        for sel in (m & (a > 0), m & (a < 0)):
            out += [torch.where(sel, h, zero).sum(), sel.sum().to(torch.float64)]
    return torch.stack(out)


def _token_entropy_compute(stats: Tensor) -> dict[str, Tensor]:
    """Means from the statistics of :func:`_token_entropy_update` (a subset with no token gives NaN)."""
    return {"all": stats[0] / stats[1], "pos": stats[2] / stats[3], "neg": stats[4] / stats[5]}


def token_entropy_stats(entropy: Tensor, mask: Tensor, advantages: Tensor | None = None) -> dict[str, Tensor]:
    r"""Mean token entropy over all valid tokens and over positive- and negative-advantage tokens.

    .. math:: \bar H_S = \frac{\sum_{(i,t) \in S} H_{i,t}}{|S|}, \quad
        S \in \{\text{valid}, \text{valid} \wedge A>0, \text{valid} \wedge A<0\}

    Tokens with ``A == 0`` count in ``"all"`` only. A subset without tokens gives NaN (no value exists).

    Args:
        entropy: per-token entropy of the policy, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        advantages: per-token advantage, shape ``(B, T)``; ``None`` gives NaN for ``"pos"`` and ``"neg"``.

    Returns:
        ``{"all", "pos", "neg"}`` -> float64 scalar tensors.

    Example:
        >>> h = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]])
        >>> m = torch.tensor([[True, True, False], [True, True, True]])
        >>> a = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
        >>> {k: round(float(v), 3) for k, v in token_entropy_stats(h, m, a).items()}
        {'all': 3.0, 'pos': 1.5, 'neg': 4.0}
    """
    return _token_entropy_compute(_token_entropy_update(entropy, mask, advantages))


# ------------------------------------------------------------------------------------------------ covariance


def _covariance_update(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Sufficient statistics of the log-prob/advantage covariance, overall and over ``A > 0`` tokens.

    Args:
        logp: log-prob of each sampled token, shape ``(B, T)``.
        advantages: per-token advantage, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.

    Returns:
        float64 tensor of shape ``(8,)``: ``[n, sum A, sum l, sum A*l]`` over all valid tokens, then the same
        four over the valid tokens with ``A > 0``.
    """
    _check_same_shape(logp=logp, advantages=advantages, mask=mask)
    m = mask.bool()
    lp = logp.detach().to(torch.float64)
    a = advantages.detach().to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=lp.device)
    out = []
    for sel in (m, m & (a > 0)):
        aa = torch.where(sel, a, zero)
        ll = torch.where(sel, lp, zero)
        out += [sel.sum().to(torch.float64), aa.sum(), ll.sum(), (aa * ll).sum()]
    return torch.stack(out)


def _covariance_compute(stats: Tensor) -> dict[str, Tensor]:
    r"""Total covariance and its positive / non-positive parts from :func:`_covariance_update`'s statistics.

    With global means :math:`\bar A, \bar l` over all N tokens, a subset S (n_S tokens) contributes
    :math:`\frac1N \sum_S (A-\bar A)(l-\bar l) = \frac1N(\sum_S Al - \bar l \sum_S A - \bar A \sum_S l
    + n_S \bar A \bar l)`.
    """
    n, sa, sl, sal = stats[0], stats[1], stats[2], stats[3]
    n_p, sa_p, sl_p, sal_p = stats[4], stats[5], stats[6], stats[7]
    mean_a, mean_l = sa / n, sl / n
    total = sal / n - mean_a * mean_l
    pos = (sal_p - mean_l * sa_p - mean_a * sl_p + n_p * mean_a * mean_l) / n
    return {"cov": total, "cov_pos": pos, "cov_neg": total - pos}


def covariance_stats(logp: Tensor, advantages: Tensor, mask: Tensor) -> dict[str, Tensor]:
    r"""Covariance of the sampled token's log-prob and its advantage, split by advantage sign.

    For a softmax policy trained by policy gradient, the entropy changes as
    :math:`\Delta H \approx -\eta\,\mathrm{Cov}(\log\pi(a), A)` (Cui et al., arXiv 2505.22617): confident
    tokens with positive advantage lower entropy. With the means :math:`\bar A, \bar l` over all N valid
    tokens,

    .. math:: C = \frac1N \sum_{(i,t)} (A_{i,t} - \bar A)(l_{i,t} - \bar l), \quad
        C_{+} = \frac1N \sum_{A_{i,t} > 0} (\cdot), \quad C_{-} = \frac1N \sum_{A_{i,t} \le 0} (\cdot)

    so ``cov_pos + cov_neg == cov`` exactly (population covariance, divisor N). Tokens with ``A == 0`` count
    in ``cov_neg``, the same split as Positive-Advantage Reweighting (which keeps weight 1 on ``A <= 0``). The
    per-token summand is the score of :func:`rlvr_lightning.functional.covariance_score` (computed here in
    float64 with the two-pass means); the metric class :class:`rlvr_lightning.metrics.EntropyDynamics` gets
    the same numbers from accumulated sums.

    Args:
        logp: log-prob of each sampled token, shape ``(B, T)``.
        advantages: per-token advantage, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.

    Returns:
        ``{"cov", "cov_pos", "cov_neg"}`` -> float64 scalar tensors (NaN with no valid token).

    Example:
        >>> lp = torch.tensor([[-0.1, -2.0], [-1.0, -3.0]])
        >>> a = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
        >>> m = torch.ones(2, 2, dtype=torch.bool)
        >>> {k: round(float(v), 4) for k, v in covariance_stats(lp, a, m).items()}
        {'cov': 0.475, 'cov_pos': 0.2375, 'cov_neg': 0.2375}
    """
    from rlvr_lightning.functional.reweighting import covariance_score  # the per-token score, two-pass

    _check_same_shape(logp=logp, advantages=advantages, mask=mask)
    m = mask.bool()
    a = advantages.detach().to(torch.float64)
    score = covariance_score(logp.detach().to(torch.float64), a, m)
    zero = torch.zeros((), dtype=torch.float64, device=score.device)
    n = m.sum().to(torch.float64)
    total = torch.where(m, score, zero).sum() / n
    pos = torch.where(m & (a > 0), score, zero).sum() / n
    return {"cov": total, "cov_pos": pos, "cov_neg": total - pos}
