"""Training subsets of controlled diversity, as in the paper's data-diversity experiment.

The paper embeds every training prompt (mean-pooled final-layer hidden states), clusters the embeddings with
K-means (K = 1000) and builds low-diversity subsets from the largest clusters, compared with random subsets of the
same size (10,001 / 5,031 / 2,538 / 1,246 / 616 prompts). ``scripts/diversity_subsets.py`` runs this end to end.
Shapes: N prompts, D embedding width, K clusters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


@torch.no_grad()
def embed_prompts(
    model: nn.Module, prompt_ids: Sequence[Sequence[int]], *, batch_size: int = 32, pad_token_id: int = 0
) -> Tensor:
    """Mean-pooled final-layer hidden states of each prompt, shape ``(N, D)`` (float32).

    Args:
        model: a transformers causal LM (its final hidden states are pooled over real tokens).
        prompt_ids: token ids of each prompt.
        batch_size: prompts per forward pass.
        pad_token_id: id used for (right) padding; padded positions are excluded from the mean.
    """
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.bool)
        for i, p in enumerate(chunk):
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = True
        hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        last = hidden.hidden_states[-1].float()
        m = mask.to(device).unsqueeze(-1)
        out.append(((last * m).sum(1) / m.sum(1).clamp(min=1)).cpu())
    return torch.cat(out)


def kmeans(x: Tensor, k: int, *, iters: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """K-means with k-means++ initialization (Lloyd iterations, squared Euclidean distance).

    Args:
        x: points, shape ``(N, D)``.
        k: number of clusters (``1 <= k <= N``).
        iters: maximum Lloyd iterations (stops early when assignments no longer change).
        seed: seeds the initialization.

    Returns:
        ``(labels (N,), centroids (K, D))``.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of points), got {k}")
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(n, (1,), generator=gen)]
    for _ in range(1, k):  # k-means++: sample proportionally to the squared distance to the nearest centroid
        d2 = torch.cdist(x, centroids).min(dim=1).values.pow(2)
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        centroids = torch.cat([centroids, x[torch.multinomial(probs, 1, generator=gen)]])
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        new = torch.cdist(x, centroids).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # empty clusters stay put
    return labels, centroids


def low_diversity_subset(labels: Tensor, size: int) -> Tensor:
    """Indices of ``size`` points drawn from the fewest, largest clusters.

    Clusters are taken largest first (ties by cluster id) and whole, the last one cut to reach ``size``; points
    keep their original order within a cluster.

    Args:
        labels: cluster of each point, shape ``(N,)``.
        size: subset size (``<= N``).
    """
    n = labels.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"size must be in [1, {n}], got {size}")
    counts = torch.bincount(labels)
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    picked: list[int] = []
    for c in order:
        picked.extend(torch.nonzero(labels == c).flatten().tolist())
        if len(picked) >= size:
            break
    return torch.tensor(picked[:size], dtype=torch.long)


def random_subset(n: int, size: int, *, seed: int = 0) -> Tensor:
    """``size`` indices drawn uniformly without replacement from ``range(n)``, sorted."""
    if not 1 <= size <= n:
        raise ValueError(f"size must be in [1, {n}], got {size}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def mean_pairwise_cosine_distance(x: Tensor) -> Tensor:
    """Mean cosine distance over all pairs of distinct rows of ``x`` (shape ``(N, D)``): a diversity score."""
    u = torch.nn.functional.normalize(x.float(), dim=1)
    n = u.shape[0]
    if n < 2:
        return torch.zeros(())
    sim = u @ u.T
    return 1 - (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
