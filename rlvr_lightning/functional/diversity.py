"""Diversity of the responses to one prompt: distinct-n (over words or token ids) and Self-BLEU.

The paper measures how entropy collapse narrows what a policy writes with n-gram diversity and Self-BLEU over
the G responses to one prompt. These functions take the G responses of one prompt group; the metric class
:class:`rlvr_lightning.metrics.ResponseDiversity` averages them over prompts. Self-BLEU uses torchmetrics'
BLEU, imported when first called. The number of distinct final answers needs math-verify: it is
:func:`rlvr_lightning.metrics.num_distinct_answers`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["distinct_n", "distinct_n_tokens", "self_bleu"]


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got n={n!r}")


def _distinct_n_counts(texts: Sequence[str], *, n: int) -> tuple[int, int]:
    """``(unique n-grams, all n-grams)`` over the whitespace-separated words of ``texts``."""
    _check_n(n)
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen), total


def distinct_n(texts: Sequence[str], *, n: int = 2) -> Tensor:
    r"""Distinct-n (Li et al., 2016): unique n-grams over all n-grams of a set of responses.

    .. math:: \text{distinct-}n = |\{\text{n-grams of all texts}\}| \,/\, \sum_{\text{texts}} \#\text{n-grams}

    Words are whitespace-separated; n-grams do not cross the end of a text. No n-gram at all gives 0.

    Args:
        texts: the responses to one prompt (length G).
        n: n-gram size.

    Returns:
        float64 scalar tensor in [0, 1].

    Example:
        >>> distinct_n(["a b c", "a b d"], n=2)
        tensor(0.7500, dtype=torch.float64)
    """
    unique, total = _distinct_n_counts(texts, n=n)
    return torch.tensor(unique / total if total else 0.0, dtype=torch.float64)


def distinct_n_tokens(token_ids: Tensor, mask: Tensor, *, n: int = 2) -> Tensor:
    """Distinct-n over token ids instead of words (same definition as :func:`distinct_n`).

    Args:
        token_ids: response tokens of one prompt group, shape ``(G, T)``.
        mask: True on real response tokens, shape ``(G, T)``; each row's valid tokens must be a prefix.

    Returns:
        float64 scalar tensor in [0, 1].

    Example:
        >>> distinct_n_tokens(torch.tensor([[1, 2, 3], [1, 2, 4]]), torch.ones(2, 3, dtype=torch.bool), n=2)
        tensor(0.7500, dtype=torch.float64)
    """
    _check_n(n)
    if token_ids.dim() != 2 or token_ids.shape != mask.shape:
        raise ValueError(
            f"token_ids and mask must both have shape (G, T), got {tuple(token_ids.shape)} and "
            f"{tuple(mask.shape)}"
        )
    g, t = token_ids.shape
    if t < n:
        return torch.zeros((), dtype=torch.float64, device=token_ids.device)
    windows = token_ids.unfold(1, n, 1)  # (G, T-n+1, n)
    valid = mask.bool().unfold(1, n, 1).all(-1)  # (G, T-n+1)
    grams = windows[valid]  # (M, n)
    total = grams.shape[0]
    if total == 0:
        return torch.zeros((), dtype=torch.float64, device=token_ids.device)
    unique = torch.unique(grams, dim=0).shape[0]
    return torch.tensor(unique / total, dtype=torch.float64, device=token_ids.device)


def self_bleu(texts: Sequence[str], *, n_gram: int = 4, smooth: bool = False) -> Tensor:
    r"""Self-BLEU (Zhu et al., 2018): each response scored by BLEU against the others as references, averaged.

    .. math:: \text{Self-BLEU} = \frac1G \sum_{i=1}^{G} \mathrm{BLEU}(y_i; \{y_j\}_{j \ne i})

    BLEU is torchmetrics' ``bleu_score`` (corpus BLEU of one hypothesis, 13a tokenization is not applied:
    words are whitespace-split). Higher means less diverse. Responses shorter than ``n_gram`` words score 0
    unless ``smooth``.

    Args:
        texts: the responses to one prompt (length G >= 2).
        n_gram: highest n-gram order of BLEU.
        smooth: add-one smoothing of the n-gram precisions (Lin and Och, 2004).

    Returns:
        float64 scalar tensor in [0, 1].

    Raises:
        ValueError: with fewer than two texts (no references).

    Example:
        >>> float(self_bleu(["the cat sat on the mat", "the cat sat on the mat"]))
        1.0
    """
    from torchmetrics.functional.text import bleu_score

    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(f"self_bleu needs at least two texts to use as references, got {len(texts)}")
    scores = [
        bleu_score([texts[i]], [texts[:i] + texts[i + 1 :]], n_gram=n_gram, smooth=smooth).to(torch.float64)
        for i in range(len(texts))
    ]
    return torch.stack(scores).mean()
