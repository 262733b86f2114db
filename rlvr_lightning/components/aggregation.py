"""Built-in loss aggregations: token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm.

Each reduces a per-token loss ``(B, T)`` to a scalar. ``normalizers`` says which global counts a mode divides
by (``"tokens"``: valid tokens of the mini-batch; ``"seqs"``: its non-empty sequences) so the training loop
counts them once per mini-batch, over micro-batches and ranks, and passes them as ``num_tokens`` /
``num_seqs``. The math lives in :func:`rlvr_lightning.functional.aggregate`.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.components.base import Aggregation


class _ModeAggregation(Aggregation):
    """An aggregation that forwards to :func:`rlvr_lightning.functional.aggregate` with a fixed ``mode``."""

    mode: ClassVar[str]
    max_len: int | None = None

    def __call__(
        self,
        loss: Tensor,
        mask: Tensor,
        *,
        num_tokens: Tensor | float | None = None,
        num_seqs: Tensor | float | None = None,
    ) -> Tensor:
        """Scalar loss.

        Args:
            loss: per-token loss, shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.
            num_tokens: global valid-token count of the mini-batch (``None``: counted from ``mask``).
            num_seqs: global sequence count of the mini-batch (``None``: ``B``).

        Returns:
            The aggregated loss, a 0-dim tensor.
        """
        return F.aggregate(
            loss, mask, mode=self.mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=self.max_len
        )


@Aggregation.register("token-mean")
class TokenMean(_ModeAggregation):
    """Mean over every valid token of the mini-batch (DAPO; the paper's): ``sum_{i,t} l_it / N_tokens``."""

    mode = "token-mean"
    normalizers = ("tokens",)


@Aggregation.register("seq-mean-token-sum")
class SeqMeanTokenSum(_ModeAggregation):
    """Sum over each sequence's tokens, mean over sequences: ``sum_i sum_t l_it / N_seqs``."""

    mode = "seq-mean-token-sum"
    normalizers = ("seqs",)


@Aggregation.register("seq-mean-token-mean")
class SeqMeanTokenMean(_ModeAggregation):
    """Mean over each sequence's tokens, then over sequences (GRPO): ``sum_i mean_t l_it / N_seqs``."""

    mode = "seq-mean-token-mean"
    normalizers = ("seqs",)


@Aggregation.register("seq-mean-token-sum-norm")
class SeqMeanTokenSumNorm(_ModeAggregation):
    """Dr. GRPO's constant normalizer: ``sum_i sum_t l_it / (N_seqs * max_len)``.

    Args:
        max_len: the constant length (usually the response length cap); must be >= 1.
    """

    mode = "seq-mean-token-sum-norm"
    normalizers = ("seqs",)

    def __init__(self, max_len: int) -> None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"SeqMeanTokenSumNorm: max_len must be an integer >= 1, got {max_len!r}")
        self.max_len = max_len
