"""Bootstrap confidence interval of a mean (percentile method), seeded and vectorized.

Used for the confidence interval of Avg@k over the questions of a benchmark: each question's Avg@k is one value,
questions are resampled with replacement. Shapes: P values.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bootstrap_mean_interval"]


def bootstrap_mean_interval(
    values: Tensor, *, num_resamples: int = 1000, level: float = 0.95, seed: int = 0, chunk_elements: int = 2**22
) -> Tensor:
    r"""Percentile bootstrap interval of the mean of ``values``.

    Draws ``num_resamples`` resamples of the P values with replacement, takes each resample's mean and returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means (linear interpolation between order
    statistics, as ``numpy.percentile``):

    .. math:: \bar x^{*b} = \frac1P \sum_{i=1}^{P} x_{I_{bi}},\ I_{bi} \sim \mathcal U\{1..P\},\qquad
        [\,q_{(1-\text{level})/2}(\bar x^{*}),\ q_{(1+\text{level})/2}(\bar x^{*})\,]

    The draws come from a ``torch.Generator`` seeded with ``seed``, so the same values and seed give the same
    interval on every run and rank.

    Args:
        values: one value per unit resampled (per question), shape ``(P,)``.
        num_resamples: the number of bootstrap resamples B (>= 1).
        level: the confidence level, in (0, 1).
        seed: the generator's seed.
        chunk_elements: draw at most this many indices at a time (bounds memory at B x P indices).

    Returns:
        float64 tensor of shape ``(2,)``: the interval's low and high ends (NaN for P = 0).

    Example:
        >>> bootstrap_mean_interval(torch.tensor([0.5, 0.5, 0.5]))
        tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    if values.dim() != 1:
        raise ValueError(f"values must have shape (P,), got {tuple(values.shape)}")
    if not isinstance(num_resamples, int) or isinstance(num_resamples, bool) or num_resamples < 1:
        raise ValueError(f"num_resamples must be an integer >= 1, got {num_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = values.detach().to(device="cpu", dtype=torch.float64)
    p = x.numel()
    if p == 0:
        return torch.full((2,), float("nan"), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    rows = max(1, chunk_elements // p)
    means = []
    for start in range(0, num_resamples, rows):
        n = min(rows, num_resamples - start)
        idx = torch.randint(p, (n, p), generator=gen)  # (n, P) resampled question indices
        means.append(x[idx].mean(dim=-1))
    q = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=torch.float64)
    return torch.quantile(torch.cat(means), q).to(values.device)
