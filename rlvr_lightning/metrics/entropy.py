"""Entropy metrics: mean token entropy split by advantage sign, and the log-prob/advantage covariance.

Both keep fixed-size float64 sum states reduced by ``sum`` across processes, so accumulating over
micro-batches, steps or data-parallel ranks gives exactly the value of one big batch. ``compute`` returns a
dict: log it with ``self.log_dict(metric.compute())`` or ``self.log_dict`` of the prefixed keys (a dict cannot
be passed to ``self.log`` as a metric object). Shapes: B sequences, T response tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from rlvr_lightning.functional.entropy_stats import (
    _covariance_compute,
    _covariance_update,
    _token_entropy_compute,
    _token_entropy_update,
)

__all__ = ["EntropyDynamics", "TokenEntropy"]


class TokenEntropy(Metric):
    """Mean token entropy over valid tokens, and over tokens with positive / negative advantage.

    ``compute()`` returns ``{"all", "pos", "neg"}`` (float64 scalars; a subset that never had a token is NaN).
    Functional twin: :func:`rlvr_lightning.functional.token_entropy_stats`.

    Example:
        >>> m = TokenEntropy()
        >>> m.update(torch.tensor([[1.0, 3.0]]), torch.tensor([[True, True]]), torch.tensor([[1.0, -1.0]]))
        >>> {k: float(v) for k, v in m.compute().items()}
        {'all': 2.0, 'pos': 1.0, 'neg': 3.0}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("stats", default=torch.zeros(6, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, entropy: Tensor, mask: Tensor, advantages: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            entropy: per-token entropy, shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.
            advantages: per-token advantage, shape ``(B, T)``, or ``None`` (only ``"all"`` is then updated).
        """
        self.stats += _token_entropy_update(entropy, mask, advantages).to(self.stats.device)

    def compute(self) -> dict[str, Tensor]:
        """``{"all", "pos", "neg"}`` mean token entropies."""
        return _token_entropy_compute(self.stats)


class EntropyDynamics(Metric):
    r"""Covariance of log-prob and advantage, the driver of entropy change, split by advantage sign.

    Cui et al. (arXiv 2505.22617): :math:`\Delta H \approx -\eta\,\mathrm{Cov}(\log\pi(a), A)`. ``compute()``
    returns ``{"cov", "cov_pos", "cov_neg"}`` where, with global means over all accumulated valid tokens,
    ``cov_pos`` is :math:`\frac1N\sum_{A>0}(A-\bar A)(l-\bar l)`, ``cov_neg`` the same over ``A <= 0``, and
    ``cov_pos + cov_neg == cov``. The states are sums (N, sum A, sum l, sum A*l, overall and over A>0), so the
    means are global, not per batch: accumulation and DDP are exact. Functional twin:
    :func:`rlvr_lightning.functional.covariance_stats`.

    Example:
        >>> m = EntropyDynamics()
        >>> mask = torch.ones(1, 2, dtype=torch.bool)
        >>> m.update(torch.tensor([[-0.1, -2.0]]), torch.tensor([[1.0, 1.0]]), mask)
        >>> m.update(torch.tensor([[-1.0, -3.0]]), torch.tensor([[-1.0, -1.0]]), mask)
        >>> {k: round(float(v), 4) for k, v in m.compute().items()}
        {'cov': 0.475, 'cov_pos': 0.2375, 'cov_neg': 0.2375}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("stats", default=torch.zeros(8, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logp: Tensor, advantages: Tensor, mask: Tensor) -> None:
        """Add a batch.

        Args:
            logp: log-prob of each sampled token under the current policy, shape ``(B, T)``.
            advantages: per-token advantage, shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.
        """
        self.stats += _covariance_update(logp, advantages, mask).to(self.stats.device)

    def compute(self) -> dict[str, Tensor]:
        """``{"cov", "cov_pos", "cov_neg"}``."""
        return _covariance_compute(self.stats)
