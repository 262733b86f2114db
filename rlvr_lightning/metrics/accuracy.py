"""Accuracy over several samples per question: Pass@k (unbiased), Avg@k and Maj@k, and a bootstrap confidence
interval of Avg@k, as sum states.

Each question contributes its Pass@k values, its Avg@k (c / n) and optionally its Maj@k to float64 sums; the
result is the mean over questions. :class:`AvgAtKInterval` keeps how many questions had each number of correct
samples (0..k), which is all a bootstrap over questions needs. States are fixed-size and reduced by ``sum``, so DDP
and accumulation are exact. Shapes: P questions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from rlvr_lightning.functional.accuracy import pass_at_k
from rlvr_lightning.functional.bootstrap import bootstrap_mean_interval

__all__ = ["AvgAtKInterval", "PassAtK"]


class PassAtK(Metric):
    """Mean over questions of Pass@k for each k in ``ks``, of Avg@n, and (optionally) of Maj@n.

    ``compute()`` returns ``{"pass@<k>": ..., "avg": ...}`` plus ``"maj"`` when ``majority=True``, float64
    scalars. A question with fewer than ``max(ks)`` samples raises ``ValueError`` in ``update``.

    Args:
        ks: the k values of Pass@k (the paper reports Pass@64 with 64 samples per question).
        majority: also average Maj@n; ``update`` then needs ``majority_correct``.

    Example:
        >>> m = PassAtK(ks=(1, 2))
        >>> m.update(torch.tensor([4, 4]), torch.tensor([1, 0]))
        >>> {k: float(v) for k, v in m.compute().items()}
        {'pass@1': 0.125, 'pass@2': 0.25, 'avg': 0.125}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1,), majority: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ks = tuple(ks)
        if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty sequence of integers >= 1, got {ks!r}")
        self.ks = ks
        self.majority = majority
        self.add_state("pass_sum", default=torch.zeros(len(ks), dtype=torch.float64), dist_reduce_fx="sum")
        # [sum of avg@n, sum of maj@n, number of questions]
        self.add_state("sums", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, n: Tensor, c: Tensor, majority_correct: Tensor | None = None) -> None:
        """Add questions.

        Args:
            n: samples per question, shape ``(P,)``.
            c: correct samples per question, shape ``(P,)``.
            majority_correct: whether each question's majority-voted answer is correct, shape ``(P,)`` (from
                :func:`rlvr_lightning.functional.maj_at_k`); required when ``majority=True``.
        """
        if n.dim() != 1 or n.shape != c.shape:
            raise ValueError(f"n and c must both have shape (P,), got {tuple(n.shape)} and {tuple(c.shape)}")
        if self.majority and (majority_correct is None or majority_correct.shape != n.shape):
            raise ValueError("majority=True: update needs majority_correct of shape (P,)")
        dev = self.sums.device
        self.pass_sum += torch.stack([pass_at_k(n, c, k).sum() for k in self.ks]).to(dev)
        avg = (c.to(torch.float64) / n.to(torch.float64)).sum()
        maj = majority_correct.to(torch.float64).sum() if majority_correct is not None else avg.new_zeros(())
        self.sums += torch.stack([avg, maj, avg.new_tensor(float(n.shape[0]))]).to(dev)

    def compute(self) -> dict[str, Tensor]:
        """Means over questions: ``pass@<k>`` for each k, ``avg``, and ``maj`` if enabled."""
        count = self.sums[2]
        out = {f"pass@{k}": self.pass_sum[i] / count for i, k in enumerate(self.ks)}
        out["avg"] = self.sums[0] / count
        if self.majority:
            out["maj"] = self.sums[1] / count
        return out


class AvgAtKInterval(Metric):
    """Percentile bootstrap confidence interval of Avg@k over questions, k samples per question.

    The state counts the questions with c correct samples for each c in 0..k (a histogram of k + 1 float64 sums);
    ``compute()`` rebuilds the per-question Avg@k values c / k from it (in order of c) and returns
    :func:`~rlvr_lightning.functional.bootstrap_mean_interval` of them as ``{"low": ..., "high": ...}``
    (NaN before any update). The same questions give the same interval however they were batched or sharded.

    Args:
        k: samples per question.
        num_resamples: bootstrap resamples.
        level: confidence level.
        seed: the resampling generator's seed.

    Example:
        >>> m = AvgAtKInterval(k=4, num_resamples=2000)
        >>> m.update(torch.tensor([4, 4, 4, 4]))
        >>> {k: float(v) for k, v in m.compute().items()}
        {'low': 1.0, 'high': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int, num_resamples: int = 1000, level: float = 0.95, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        bootstrap_mean_interval(torch.zeros(1), num_resamples=num_resamples, level=level)  # validates both
        self.k, self.num_resamples, self.level, self.seed = k, num_resamples, level, seed
        self.add_state("counts", default=torch.zeros(k + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, c: Tensor) -> None:
        """Add questions.

        Args:
            c: correct samples of each question, out of k, shape ``(P,)``.
        """
        if c.dim() != 1 or bool(((c < 0) | (c > self.k)).any()):
            raise ValueError(f"c must have shape (P,) with values in [0, {self.k}], got {c.tolist()}")
        self.counts += torch.bincount(c.long().cpu(), minlength=self.k + 1).to(self.counts)

    def compute(self) -> dict[str, Tensor]:
        """``{"low", "high"}``: the interval of the mean Avg@k over the questions seen."""
        per_class = torch.arange(self.k + 1, dtype=torch.float64) / self.k
        values = per_class.repeat_interleave(self.counts.cpu().round().long())  # (P,), one Avg@k per question
        low, high = bootstrap_mean_interval(values, num_resamples=self.num_resamples, level=self.level,
                                            seed=self.seed).to(self.counts.device)
        return {"low": low, "high": high}
