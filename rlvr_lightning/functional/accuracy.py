"""Accuracy over k samples per question: Pass@k (unbiased estimator), Avg@k and Maj@k.

The paper reports Avg@64 and Pass@64 (64 samples per question at temperature 1.0). Shapes: P questions, B = P
* G sampled responses, G (or n) samples per question.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["avg_at_k", "group_counts", "maj_at_k", "pass_at_k"]


def _as_count(x: Tensor | int, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(f"{name} must hold whole numbers of samples, got {t}")
    return t.to(torch.float64)


def pass_at_k(n: Tensor | int, c: Tensor | int, k: int) -> Tensor:
    r"""Unbiased Pass@k estimator (Chen et al., 2021, arXiv 2107.03374) from n samples of which c are correct.

    .. math:: \text{pass@}k = 1 - \binom{n-c}{k} \Big/ \binom{n}{k}
        = 1 - \prod_{i=n-c+1}^{n} \left(1 - \frac{k}{i}\right)

    The product form is used: no large binomials, exact 1 whenever ``n - c < k``.

    Args:
        n: samples per question, shape ``(P,)`` (or any shape, or a Python int).
        c: correct samples per question, same shape as ``n``, ``0 <= c <= n``.
        k: the k of Pass@k, ``1 <= k <= n``.

    Returns:
        float64 tensor of the shape of ``n`` and ``c``.

    Raises:
        ValueError: if ``k < 1``, ``k > n`` for some question, or ``c`` is outside ``[0, n]``.

    Example:
        >>> pass_at_k(torch.tensor([4, 4, 4]), torch.tensor([0, 1, 4]), 2)
        tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got k={k!r}")
    nt, ct = _as_count(n, "n"), _as_count(c, "c")
    nt, ct = torch.broadcast_tensors(nt, ct)
    if (nt < k).any():
        raise ValueError(f"k={k} is larger than the number of samples n={int(nt.min())}; need 1 <= k <= n")
    if (ct < 0).any() or (ct > nt).any():
        raise ValueError("c (correct samples) must satisfy 0 <= c <= n for every question")
    if nt.numel() == 0:
        return nt.clone()
    n_max = int(nt.max())
    i = torch.arange(1, n_max + 1, dtype=torch.float64, device=nt.device)  # (n_max,)
    nn, cc = nt.unsqueeze(-1), ct.unsqueeze(-1)
    in_range = (i > nn - cc) & (i <= nn)
    factors = torch.where(in_range, 1.0 - k / i, torch.ones((), dtype=torch.float64, device=nt.device))
    return 1.0 - factors.prod(dim=-1)


def avg_at_k(correct: Tensor) -> Tensor:
    r"""Avg@k: the fraction of a question's k samples that are correct.

    .. math:: \text{avg@}k = \frac1k \sum_{j=1}^{k} \mathbb{1}[\text{sample } j \text{ correct}]

    Args:
        correct: correctness of each sample, shape ``(P, k)`` (bool or 0/1).

    Returns:
        float64 tensor of shape ``(P,)``.

    Example:
        >>> avg_at_k(torch.tensor([[1, 0, 0, 1], [1, 1, 1, 1]]))
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    if correct.dim() != 2:
        raise ValueError(f"correct must have shape (P, k), got {tuple(correct.shape)}")
    return correct.to(torch.float64).mean(dim=-1)


def maj_at_k(answer_ids: Tensor, correct: Tensor) -> Tensor:
    r"""Maj@k: is the majority-voted answer of a question's k samples correct?

    Samples with the same ``answer_ids`` value give the same answer (see
    :func:`rlvr_lightning.metrics.answer_classes` to get ids from texts with math-verify equivalence). A
    negative id means "no answer extracted": it never wins the vote; a question with no answer at all scores
    0. Ties are broken deterministically in favour of the answer whose first sample comes earliest (lowest
    sample index). The vote is scored by the correctness of that answer's first sample.

    Args:
        answer_ids: integer answer class of each sample, shape ``(P, k)``.
        correct: correctness of each sample, shape ``(P, k)`` (bool or 0/1).

    Returns:
        float64 tensor of shape ``(P,)`` with values in {0, 1}.

    Example:
        >>> ids = torch.tensor([[0, 1, 1, 2], [0, 1, 0, 1], [-1, -1, -1, -1]])
        >>> ok = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]])
        >>> maj_at_k(ids, ok)
        tensor([1., 0., 0.], dtype=torch.float64)
    """
    if answer_ids.dim() != 2 or answer_ids.shape != correct.shape:
        raise ValueError(
            f"answer_ids and correct must both have shape (P, k), got {tuple(answer_ids.shape)} and "
            f"{tuple(correct.shape)}"
        )
    p, k = answer_ids.shape
    if k == 0:
        return torch.zeros(p, dtype=torch.float64, device=answer_ids.device)
    ids = answer_ids.long()
    valid = ids >= 0
    same = (ids.unsqueeze(-1) == ids.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)  # (P, k, k)
    votes = same.sum(dim=-1)  # (P, k): votes of each sample's answer
    j = torch.arange(k, device=ids.device)
    earlier_same = same & (j.view(1, 1, k) < j.view(1, k, 1))
    first_of_class = valid & ~earlier_same.any(dim=-1)  # the first sample of each answer class
    # Score: votes first, then an earlier first sample wins; samples that are not a class's first never win.
    key = torch.where(first_of_class, votes * (k + 1) + (k - j), torch.full_like(votes, -1))
    winner = key.argmax(dim=-1)  # (P,)
    won = correct.to(torch.float64).gather(-1, winner.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid.any(dim=-1), won, torch.zeros_like(won))


def group_counts(correct: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Samples and correct samples per question from a flat rollout batch.

    Args:
        correct: correctness of each response, shape ``(B,)`` (bool, 0/1, or a reward where > 0 is correct).
        group_ids: question (prompt group) id of each response, shape ``(B,)``.

    Returns:
        ``(n, c)``, each shape ``(P,)`` (long), in the order of the sorted unique group ids.

    Example:
        >>> group_counts(torch.tensor([1, 0, 1, 1, 0]), torch.tensor([7, 7, 3, 3, 3]))
        (tensor([3, 2]), tensor([2, 1]))
    """
    if correct.dim() != 1 or correct.shape != group_ids.shape:
        raise ValueError(
            f"correct and group_ids must both have shape (B,), got {tuple(correct.shape)} and "
            f"{tuple(group_ids.shape)}"
        )
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = torch.bincount(inverse)
    c = torch.bincount(inverse, weights=(correct > 0).to(torch.float64)).long()
    return n, c
