"""Masked reductions over the valid tokens of a batch: sum, mean, variance and whitening."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Sum of ``x`` over the positions where ``mask`` is True; masked positions never contribute (not even
    NaN).

    Args:
        x: values, any shape ``(...)``.
        mask: True on valid positions, same shape as ``x`` (bool, or numeric with non-zero = valid).
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The masked sum, ``x`` reduced over ``dim``.

    Example:
        >>> masked_sum(torch.tensor([1.0, 2.0, 99.0]), torch.tensor([True, True, False]))
        tensor(3.)
    """
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of ``x`` over the valid positions; an all-masked slice gives 0 (its count is clamped to 1).

    Args:
        x: values, any shape ``(...)``.
        mask: True on valid positions, same shape as ``x``.
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The masked mean, ``x`` reduced over ``dim``.

    Example:
        >>> x, m = torch.tensor([[1.0, 3.0], [5.0, -7.0]]), torch.tensor([[True, True], [True, False]])
        >>> masked_mean(x, m, dim=1)
        tensor([2., 5.])
    """
    mask = mask.bool()
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def masked_var(x: Tensor, mask: Tensor, *, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all valid positions (a scalar).

    With ``unbiased=True`` the sum of squares is divided by ``n - 1`` (Bessel); ``n - 1`` is clamped to 1, so
    a single valid element gives variance 0 instead of an error.

    Args:
        x: values, any shape ``(...)``.
        mask: True on valid positions, same shape as ``x``.
        unbiased: divide by ``n - 1`` instead of ``n``.

    Returns:
        A 0-dim tensor.

    Example:
        >>> masked_var(torch.tensor([1.0, 2.0, 3.0, 50.0]), torch.tensor([True, True, True, False]))
        tensor(1.)
    """
    mask = mask.bool()
    centered = x - masked_mean(x, mask)
    ss = masked_sum(centered * centered, mask)
    n = mask.sum().to(x.dtype)
    return ss / ((n - 1) if unbiased else n).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Standardize ``x`` with the mean and unbiased variance of its valid positions; 0 on masked positions.

    .. math:: \\hat x = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon}

    Args:
        x: values, any shape ``(...)``.
        mask: True on valid positions, same shape as ``x``.
        eps: added to the variance before the square root.

    Returns:
        Whitened values, same shape as ``x``.

    Example:
        >>> masked_whiten(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([True, True, False]))
        tensor([-0.7071,  0.7071,  0.0000])
    """
    mask = mask.bool()
    out = (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps)
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
