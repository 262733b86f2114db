"""Statistics of the scores of each prompt group: size, mean, unbiased variance and whether all scores are equal.

Used by the advantage estimators, the step log and dynamic sampling ("a group whose rewards are all equal has no
learning signal"). Vectorized over groups (``unique`` + ``index_add``); accepts arbitrary integer group ids, rows in
any order and groups of different sizes. Shapes: B sequences, K distinct groups.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["GroupStats", "group_stats"]


class GroupStats(NamedTuple):
    """Per-group statistics of :func:`group_stats`; ``x[index]`` gives a group value for each row.

    Attributes:
        ids: the distinct group ids, sorted, shape ``(K,)``.
        index: the position in ``ids`` of each row's group, shape ``(B,)``.
        count: members per group, shape ``(K,)``, in the scores' floating dtype.
        mean: mean score per group, shape ``(K,)``.
        var: unbiased (``n - 1``) variance per group, shape ``(K,)``; 0 for a singleton.
        equal: True where all the group's scores are equal (no learning signal), shape ``(K,)``.
    """

    ids: Tensor
    index: Tensor
    count: Tensor
    mean: Tensor
    var: Tensor
    equal: Tensor


def group_stats(scores: Tensor, group_ids: Tensor) -> GroupStats:
    r"""Size, mean, unbiased variance and all-equal flag of the scores of each group.

    .. math:: \mu_g = \frac{1}{n_g}\sum_{i \in g} r_i, \quad
        \sigma^2_g = \frac{1}{\max(n_g - 1, 1)}\sum_{i \in g} (r_i - \mu_g)^2

    ``equal`` compares the group's largest and smallest score exactly (no rounding residue of the variance).

    Args:
        scores: one scalar reward per response, shape ``(B,)``; integer scores are converted to the default dtype.
        group_ids: integer group (prompt) id of each response, shape ``(B,)``; any values, any row order.

    Returns:
        A :class:`GroupStats` of per-group tensors of shape ``(K,)`` and the row-to-group ``index`` ``(B,)``.

    Example:
        >>> s = group_stats(torch.tensor([1.0, 0.0, 2.0, 2.0, 5.0]), torch.tensor([3, 3, 7, 7, 9]))
        >>> s.ids, s.count, s.equal
        (tensor([3, 7, 9]), tensor([2., 2., 1.]), tensor([False,  True,  True]))
        >>> s.mean, s.var
        (tensor([0.5000, 2.0000, 5.0000]), tensor([0.5000, 0.0000, 0.0000]))
        >>> s.mean[s.index]
        tensor([0.5000, 0.5000, 2.0000, 2.0000, 5.0000])
    """
    if scores.dim() != 1 or group_ids.shape != scores.shape:
        raise ValueError(
            f"scores and group_ids must both have shape (B,); "
            f"got {tuple(scores.shape)} and {tuple(group_ids.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    x = scores if scores.dtype.is_floating_point else scores.to(torch.get_default_dtype())
    ids, inv = torch.unique(group_ids, return_inverse=True)
    k = ids.shape[0]

    def per_group(values: Tensor, fill: float = 0.0, reduce: str = "sum") -> Tensor:
        out = torch.full((k,), fill, dtype=x.dtype, device=x.device)
        return out.index_add_(0, inv, values) if reduce == "sum" else out.scatter_reduce(0, inv, values, reduce)

    count = per_group(torch.ones_like(x))
    mean = per_group(x) / count.clamp(min=1)
    centered = x - mean[inv]
    var = per_group(centered * centered) / (count - 1).clamp(min=1)
    equal = per_group(x, float("-inf"), "amax") == per_group(x, float("inf"), "amin")
    return GroupStats(ids, inv, count, mean, var, equal)
