"""Calibration of a sequence's confidence against its correctness: confidence, ECE, Brier score, AUROC.

The paper relates entropy collapse to over-confidence: the more the entropy collapses, the more confident the
policy is in its responses regardless of whether they are right. Shapes: B sequences, T response tokens, N
scored sequences.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "CONFIDENCE_KINDS",
    "brier_score",
    "calibration_bins",
    "confidence_auroc",
    "expected_calibration_error",
    "sequence_confidence",
]

CONFIDENCE_KINDS = ("mean_logprob", "sum_logprob", "min_prob")


def sequence_confidence(
    logp: Tensor, mask: Tensor, *, kind: Literal["mean_logprob", "sum_logprob", "min_prob"] = "mean_logprob"
) -> Tensor:
    r"""A response's confidence in [0, 1] from its token log-probs.

    * ``"mean_logprob"`` (default): :math:`\exp(\frac1{|y|}\sum_t \log\pi(y_t))`, the geometric-mean token
      probability; independent of length, so long and short responses are comparable.
    * ``"sum_logprob"``: :math:`\exp(\sum_t \log\pi(y_t)) = \pi(y)`, the probability of the whole sequence
      (shrinks with length).
    * ``"min_prob"``: :math:`\min_t \pi(y_t)`, the least confident step.

    A response with no valid token gets confidence 1 for ``mean``/``sum`` (empty product) and 1 for ``min``.

    Args:
        logp: log-prob of each response token, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        kind: one of ``CONFIDENCE_KINDS``.

    Returns:
        float tensor of shape ``(B,)``.

    Example:
        >>> lp = torch.log(torch.tensor([[0.5, 0.5, 0.1], [0.9, 0.1, 0.2]]))
        >>> m = torch.tensor([[True, True, False], [True, True, True]])
        >>> sequence_confidence(lp, m, kind="min_prob")
        tensor([0.5000, 0.1000])
    """
    if logp.shape != mask.shape:
        raise ValueError(
            f"logp and mask must have the same shape (B, T), got {tuple(logp.shape)} and {tuple(mask.shape)}"
        )
    m = mask.bool()
    lp = logp.detach()
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    if kind == "mean_logprob":
        return torch.exp(torch.where(m, lp, zero).sum(-1) / m.sum(-1).clamp(min=1))
    if kind == "sum_logprob":
        return torch.exp(torch.where(m, lp, zero).sum(-1))
    if kind == "min_prob":
        return torch.exp(torch.where(m, lp, zero).amin(-1))
    raise ValueError(f"kind must be one of {CONFIDENCE_KINDS}, got {kind!r}")


def _check_conf(confidences: Tensor, correct: Tensor) -> None:
    if confidences.dim() != 1 or confidences.shape != correct.shape:
        raise ValueError(
            f"confidences and correct must both have shape (N,), got {tuple(confidences.shape)} and "
            f"{tuple(correct.shape)}"
        )
    if not confidences.is_floating_point():
        raise ValueError(f"confidences must be a float tensor in [0, 1], got dtype {confidences.dtype}")
    if ((confidences < 0) | (confidences > 1)).any():
        raise ValueError("confidences must lie in [0, 1]")


def calibration_bins(confidences: Tensor, correct: Tensor, *, n_bins: int) -> Tensor:
    """Per-bin ``[count, sum of confidences, sum of correct]`` over equal-width confidence bins.

    Bins follow torchmetrics' ``binary_calibration_error``: boundaries ``linspace(0, 1, n_bins + 1)`` in the
    confidences' dtype, bin = ``bucketize(conf, boundaries, right=True) - 1``; a confidence of exactly 1.0
    lands in an extra last bin of its own. The ECE and the reliability diagram are drawn from these sums.

    Args:
        confidences: confidence of each response in [0, 1], shape ``(N,)``.
        correct: whether each response is correct, shape ``(N,)`` (bool or 0/1).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        float64 tensor of shape ``(3, n_bins + 1)``.

    Example:
        >>> calibration_bins(torch.tensor([0.1, 0.6, 0.7, 1.0]), torch.tensor([0, 1, 0, 1]), n_bins=2)
        tensor([[1.0000, 2.0000, 1.0000],
                [0.1000, 1.3000, 1.0000],
                [0.0000, 1.0000, 1.0000]], dtype=torch.float64)
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    bounds = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype, device=confidences.device)
    idx = torch.bucketize(confidences, bounds, right=True) - 1
    out = torch.zeros(3, n_bins + 1, dtype=torch.float64, device=confidences.device)
    out[0].index_add_(0, idx, torch.ones_like(confidences, dtype=torch.float64))
    out[1].index_add_(0, idx, confidences.to(torch.float64))
    out[2].index_add_(0, idx, correct.to(torch.float64))
    return out


def _ece_compute(bins: Tensor) -> Tensor:
    r""":math:`\sum_b \frac{n_b}{N} |\bar c_b - \bar a_b| = \frac1N \sum_b |\sum_b c - \sum_b a|`."""
    return (bins[1] - bins[2]).abs().sum() / bins[0].sum()


def expected_calibration_error(confidences: Tensor, correct: Tensor, *, n_bins: int = 15) -> Tensor:
    r"""Expected calibration error (L1, equal-width bins), equal to torchmetrics' binary_calibration_error.

    .. math:: \mathrm{ECE} = \sum_{b} \frac{n_b}{N} \left| \mathrm{conf}_b - \mathrm{acc}_b \right|

    Args:
        confidences: confidence of each response in [0, 1], shape ``(N,)``.
        correct: whether each response is correct, shape ``(N,)`` (bool or 0/1).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        float64 scalar tensor.

    Example:
        >>> conf, correct = torch.tensor([0.9, 0.9, 0.2, 0.3]), torch.tensor([1, 0, 0, 0])
        >>> expected_calibration_error(conf, correct, n_bins=10)
        tensor(0.3250, dtype=torch.float64)
    """
    _check_conf(confidences, correct)
    return _ece_compute(calibration_bins(confidences, correct, n_bins=n_bins))


def _brier_update(confidences: Tensor, correct: Tensor) -> Tensor:
    """``[sum (conf - correct)^2, N]`` as a float64 tensor of shape ``(2,)``."""
    d = confidences.to(torch.float64) - correct.to(torch.float64)
    return torch.stack([(d * d).sum(), torch.tensor(float(d.numel()), dtype=torch.float64, device=d.device)])


def brier_score(confidences: Tensor, correct: Tensor) -> Tensor:
    r"""Brier score: mean squared gap between confidence and correctness.

    .. math:: \mathrm{BS} = \frac1N \sum_i (c_i - \mathbb{1}[\text{correct}_i])^2

    Args:
        confidences: confidence of each response in [0, 1], shape ``(N,)``.
        correct: whether each response is correct, shape ``(N,)`` (bool or 0/1).

    Returns:
        float64 scalar tensor.

    Example:
        >>> brier_score(torch.tensor([0.9, 0.2]), torch.tensor([1, 1]))
        tensor(0.3250, dtype=torch.float64)
    """
    _check_conf(confidences, correct)
    s = _brier_update(confidences, correct)
    return s[0] / s[1]


def confidence_auroc(confidences: Tensor, correct: Tensor) -> Tensor:
    r"""Area under the ROC curve of confidence as a predictor of correctness (exact, ties count one half).

    Equals the Mann-Whitney statistic :math:`P(c_+ > c_-) + \frac12 P(c_+ = c_-)` over pairs of a correct
    and an incorrect response, i.e. the trapezoidal ROC area of torchmetrics' ``binary_auroc``. With only one
    class present the AUROC is undefined; 0 is returned, as torchmetrics does.

    Args:
        confidences: confidence of each response, shape ``(N,)``.
        correct: whether each response is correct, shape ``(N,)`` (bool or 0/1).

    Returns:
        float64 scalar tensor.

    Example:
        >>> confidence_auroc(torch.tensor([0.1, 0.5, 0.5, 0.7]), torch.tensor([0, 1, 0, 1]))
        tensor(0.8750, dtype=torch.float64)
    """
    if confidences.dim() != 1 or confidences.shape != correct.shape:
        raise ValueError(
            f"confidences and correct must both have shape (N,), got {tuple(confidences.shape)} and "
            f"{tuple(correct.shape)}"
        )
    pos = correct.bool()
    n_pos = pos.sum().to(torch.float64)
    n_neg = (~pos).sum().to(torch.float64)
    # Average ranks (1-based) with ties sharing the mean rank.
    x = confidences.to(torch.float64)
    uniq, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    avg_rank = ends - (counts.to(torch.float64) - 1) / 2
    ranks = avg_rank[inverse]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.zeros_like(auc))


def _auroc_hist_update(confidences: Tensor, correct: Tensor, *, n_bins: int) -> Tensor:
    """Histogram ``[negatives, positives]`` of confidences in ``n_bins`` equal-width bins, shape ``(2,
    n_bins)``."""
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    idx = (confidences.to(torch.float64) * n_bins).floor().long().clamp(0, n_bins - 1)
    out = torch.zeros(2, n_bins, dtype=torch.float64, device=confidences.device)
    out.index_put_((correct.bool().long(), idx), torch.ones_like(idx, dtype=torch.float64), accumulate=True)
    return out


def _auroc_hist_compute(hist: Tensor) -> Tensor:
    r"""Mann-Whitney AUROC of the binned confidences: pairs in the same bin count one half.

    .. math:: \mathrm{AUROC} = \frac{\sum_b p_b (\sum_{b' < b} q_{b'} + \frac12 q_b)}{P Q}
    """
    neg, pos = hist[0], hist[1]
    below = torch.cumsum(neg, 0) - neg
    num = (pos * (below + 0.5 * neg)).sum()
    den = pos.sum() * neg.sum()
    return torch.where(den > 0, num / den, torch.zeros_like(num))
