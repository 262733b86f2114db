"""K-means subsets of controlled diversity (rlvr_lightning.data.subsets, scripts/diversity_subsets.py)."""

from __future__ import annotations

import itertools
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from rlvr_lightning.data.subsets import (
    embed_prompts,
    kmeans,
    low_diversity_subset,
    mean_pairwise_cosine_distance,
    random_subset,
)

REPO = Path(__file__).resolve().parents[2]


def test_kmeans_recovers_separated_blobs():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(20)
    x = centers[truth] + 0.3 * torch.randn(60, 2, generator=gen)
    labels, cent = kmeans(x, 3, seed=1)
    # the same partition up to renaming of clusters
    pairs = {(int(a), int(b)) for a, b in zip(truth, labels)}
    assert len(pairs) == 3 and len({b for _, b in pairs}) == 3
    for c in range(3):  # centroids are the means of their points
        torch.testing.assert_close(cent[c], x[labels == c].mean(0), atol=1e-5, rtol=0)


def test_kmeans_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(torch.zeros(3, 2), 4)


def test_low_diversity_subset_takes_largest_clusters_first():
    labels = torch.tensor([2, 0, 1, 1, 2, 1, 0, 2, 2])  # sizes: 0 -> 2, 1 -> 3, 2 -> 4
    assert low_diversity_subset(labels, 4).tolist() == [0, 4, 7, 8]
    assert low_diversity_subset(labels, 6).tolist() == [0, 4, 7, 8, 2, 3]
    with pytest.raises(ValueError, match="size"):
        low_diversity_subset(labels, 10)


def test_random_subset_is_seeded_and_unique():
    a, b = random_subset(100, 30, seed=3), random_subset(100, 30, seed=3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 30


def test_mean_pairwise_cosine_distance_matches_naive_loop():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity
    naive = sum(1 - float(cos(x[i], x[j], dim=0)) for i, j in itertools.permutations(range(7), 2)) / 42
    assert abs(float(mean_pairwise_cosine_distance(x)) - naive) < 1e-6


def test_embeddings_do_not_depend_on_batch_padding():
    from rlvr_lightning.models import load_causal_lm

    model = load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True).eval()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13]]
    together = embed_prompts(model, prompts, batch_size=2)
    alone = torch.cat([embed_prompts(model, [p], batch_size=1) for p in prompts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_script_writes_subsets(tmp_path, monkeypatch, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("".join((REPO / "assets" / "arithmetic" / "train.jsonl").read_text().splitlines(True)[:120]))
    argv = ["diversity_subsets.py", "--files", str(data), "--model", str(REPO / "assets" / "tiny-qwen2"),
            "--from-scratch", "--clusters", "6", "--sizes", "30", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "diversity_subsets.py"), run_name="__main__")
    low = [json.loads(line) for line in (tmp_path / "out" / "low_diversity_30.jsonl").read_text().splitlines()]
    rnd = [json.loads(line) for line in (tmp_path / "out" / "random_30.jsonl").read_text().splitlines()]
    assert len(low) == len(rnd) == 30 and {"prompt", "answer"} <= set(low[0])
    report = capsys.readouterr().out
    assert "low_diversity_30.jsonl" in report and "random_30.jsonl" in report
