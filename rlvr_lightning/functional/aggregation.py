"""Loss aggregation: reduce a per-token loss ``(B, T)`` to a scalar with explicit global normalizers.

Passing the global counts of the whole mini-batch (over gradient-accumulation micro-batches and data-parallel
ranks) as ``num_tokens`` / ``num_seqs`` makes the sum of the micro-batch results equal the one-big-batch
value. Under DDP/FSDP, which average gradients over ranks, multiply the result by the world size (verl's
``dp_size``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr_lightning.functional._masked import masked_sum

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)


def _norm(value: Tensor | float | None, local: Tensor, like: Tensor) -> Tensor:
    if value is None:
        return local.clamp(min=1).to(like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def aggregate(
    loss: Tensor,
    mask: Tensor,
    *,
    mode: str = "token-mean",
    num_tokens: Tensor | float | None = None,
    num_seqs: Tensor | float | None = None,
    max_len: int | float | None = None,
) -> Tensor:
    """Reduce a per-token loss to a scalar (modes as verl 0.9.1's ``agg_loss``).

    - ``"token-mean"``: :math:`\\sum_{i,t} m_{it}\\ell_{it} / N_{tok}` (DAPO, arXiv 2503.14476).
    - ``"seq-mean-token-sum"``: :math:`\\sum_i \\sum_t m_{it}\\ell_{it} / N_{seq}`.
    - ``"seq-mean-token-mean"``: :math:`\\sum_i (\\sum_t m_{it}\\ell_{it} / |y_i|) / N_{seq}` (GRPO's
      original).
    - ``"seq-mean-token-sum-norm"``: :math:`\\sum_i \\sum_t m_{it}\\ell_{it} / (N_{seq} L)` with a constant
      ``L = max_len`` (Dr. GRPO, arXiv 2503.20783). verl divides by ``loss_scale_factor``, defaulting to the
      padded width ``T`` of the micro-batch; here ``max_len`` is required, so the divisor never depends on
      padding.

    Rows without a valid token do not count as sequences. ``N_tok`` / ``N_seq`` default to the counts of this
    batch; pass the global counts when accumulating micro-batches.

    Args:
        loss: per-token loss, shape ``(B, T)``.
        mask: True on real response tokens, shape ``(B, T)``.
        mode: one of :data:`AGG_MODES`.
        num_tokens: global number of valid tokens (``"token-mean"``).
        num_seqs: global number of non-empty sequences (the ``"seq-mean-*"`` modes).
        max_len: the constant length ``L`` of ``"seq-mean-token-sum-norm"`` (required there).

    Returns:
        A 0-dim tensor.

    Example:
        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> [round(float(aggregate(loss, mask, mode=m, max_len=4)), 4) for m in AGG_MODES]
        [2.5, 5.0, 3.0, 1.25]
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {', '.join(AGG_MODES)}")
    if loss.dim() != 2 or loss.shape != mask.shape:
        raise ValueError(
            f"loss and mask must both have shape (B, T); got {tuple(loss.shape)} and {tuple(mask.shape)}"
        )
    valid = mask.bool()
    if mode == "token-mean":
        return masked_sum(loss, valid) / _norm(num_tokens, valid.sum(), loss)
    tok_per_seq = valid.sum(dim=-1)
    seq_loss = masked_sum(loss, valid, dim=-1)
    if mode == "seq-mean-token-mean":
        seq_loss = seq_loss / tok_per_seq.clamp(min=1).to(loss.dtype)
    out = seq_loss.sum() / _norm(num_seqs, (tok_per_seq > 0).sum(), loss)
    if mode == "seq-mean-token-sum-norm":
        if max_len is None or not float(max_len) > 0:
            raise ValueError(
                f"mode 'seq-mean-token-sum-norm' needs max_len > 0 (the constant length), got {max_len}"
            )
        out = out / float(max_len)
    return out
