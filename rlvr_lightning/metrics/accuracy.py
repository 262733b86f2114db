"""Accuracy over several samples per question: Pass@k (unbiased), Avg@k and Maj@k, as sum states.

Each question contributes its Pass@k values, its Avg@k (c / n) and optionally its Maj@k to float64 sums; the
result is the mean over questions. States are fixed-size and reduced by ``sum``, so DDP and accumulation are
exact. Shapes: P questions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from rlvr_lightning.functional.accuracy import pass_at_k

__all__ = ["PassAtK"]


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
