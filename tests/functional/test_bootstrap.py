"""The bootstrap confidence interval of Avg@k against independent references: a naive resampling loop (Python's
``random`` with a fixed seed, NumPy's percentile) and, for 0/1 values, the exact binomial quantiles."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from rlvr_lightning.functional import bootstrap_mean_interval
from rlvr_lightning.metrics import AvgAtKInterval


def naive_interval(values: list[float], resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Resample with replacement in a plain loop; percentile interval of the means."""
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        draw = [values[rng.randrange(len(values))] for _ in values]
        means.append(sum(draw) / len(draw))
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def per_question_avg(k: int, questions: int, seed: int) -> list[float]:
    """Avg@k of questions of varied difficulty: c ~ Binomial(k, p), p ~ Beta(0.5, 0.5)."""
    rng = np.random.default_rng(seed)
    return (rng.binomial(k, rng.beta(0.5, 0.5, size=questions)) / k).tolist()


@pytest.mark.parametrize("k,questions,level", [(64, 30, 0.95), (64, 500, 0.95), (4, 40, 0.9)])
def test_matches_a_naive_resampling_loop(k, questions, level):
    values = per_question_avg(k, questions, seed=questions)
    ours = bootstrap_mean_interval(torch.tensor(values), num_resamples=4000, level=level, seed=1)
    ref = naive_interval(values, 4000, level, seed=7)
    sd = float(np.std(values)) / math.sqrt(questions)  # the spread of the bootstrap means
    # two independent Monte-Carlo estimates of the same quantiles: about 0.04 sd of noise each at 4000 resamples
    assert abs(float(ours[0]) - ref[0]) < 0.25 * sd + 1e-12
    assert abs(float(ours[1]) - ref[1]) < 0.25 * sd + 1e-12
    assert float(ours[0]) <= float(np.mean(values)) <= float(ours[1])


@pytest.mark.parametrize("correct,questions", [(7, 30), (45, 60), (1, 20)])
def test_zero_one_values_give_the_binomial_quantiles(correct, questions):
    """With k = 1 every value is 0 or 1: a resample's mean is Binomial(P, c/P) / P exactly."""
    values = torch.tensor([1.0] * correct + [0.0] * (questions - correct))
    low, high = bootstrap_mean_interval(values, num_resamples=20000, level=0.95, seed=3).tolist()
    p = correct / questions
    cdf = np.cumsum([math.comb(questions, j) * p**j * (1 - p) ** (questions - j) for j in range(questions + 1)])
    exact_low = int(np.searchsorted(cdf, 0.025)) / questions
    exact_high = int(np.searchsorted(cdf, 0.975)) / questions
    assert abs(low - exact_low) <= 1 / questions + 1e-12  # quantiles of a lattice: within one step
    assert abs(high - exact_high) <= 1 / questions + 1e-12


def test_same_seed_same_interval_and_degenerate_cases():
    values = torch.tensor(per_question_avg(8, 50, seed=0))
    a = bootstrap_mean_interval(values, num_resamples=500, seed=5)
    assert torch.equal(a, bootstrap_mean_interval(values, num_resamples=500, seed=5))
    chunked = bootstrap_mean_interval(values, num_resamples=500, seed=5, chunk_elements=60)  # 1 resample a draw
    assert torch.equal(a, chunked)
    assert bootstrap_mean_interval(torch.full((9,), 0.25)).tolist() == [0.25, 0.25]
    assert bootstrap_mean_interval(torch.zeros(0)).isnan().all()
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_mean_interval(values, level=1.0)
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_mean_interval(values, num_resamples=0)


def test_the_metric_is_the_functional_on_its_histogram_and_batching_does_not_matter():
    k = 64
    counts = torch.tensor(per_question_avg(k, 90, seed=2)).mul(k).round().long()
    whole = AvgAtKInterval(k, num_resamples=800, level=0.9, seed=4)
    whole.update(counts)
    parts = AvgAtKInterval(k, num_resamples=800, level=0.9, seed=4)
    for chunk in counts.flip(0).split(7):  # another order, other batches
        parts.update(chunk)
    got = whole.compute()
    assert {key: float(v) for key, v in got.items()} == {key: float(v) for key, v in parts.compute().items()}
    sorted_values = counts.sort().values.double() / k  # the histogram holds the values in order of c
    ref = bootstrap_mean_interval(sorted_values, num_resamples=800, level=0.9, seed=4)
    assert [float(got["low"]), float(got["high"])] == ref.tolist()
    with pytest.raises(ValueError, match=r"values in \[0, 64\]"):
        whole.update(torch.tensor([65]))
