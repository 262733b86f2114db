"""``group_stats`` against a naive loop over the groups."""

from __future__ import annotations

import pytest
import torch

from rlvr_lightning.functional import group_stats


def _naive(scores: list[float], group_ids: list[int]) -> dict[int, tuple[int, float, float, bool]]:
    out = {}
    for g in sorted(set(group_ids)):
        xs = [s for s, i in zip(scores, group_ids) if i == g]
        n = len(xs)
        mean = sum(xs) / n
        var = sum((x - mean) ** 2 for x in xs) / max(n - 1, 1)
        out[g] = (n, mean, var, max(xs) == min(xs))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_group_stats_matches_a_naive_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    b = 40
    group_ids = torch.randint(-3, 9, (b,), generator=gen)
    scores = torch.randint(0, 3, (b,), generator=gen).to(torch.float64) * 0.5
    s = group_stats(scores, group_ids)
    ref = _naive(scores.tolist(), group_ids.tolist())
    assert s.ids.tolist() == list(ref)
    assert s.count.tolist() == [float(v[0]) for v in ref.values()]
    assert s.mean.tolist() == pytest.approx([v[1] for v in ref.values()], abs=1e-12)
    assert s.var.tolist() == pytest.approx([v[2] for v in ref.values()], abs=1e-12)
    assert s.equal.tolist() == [v[3] for v in ref.values()]
    assert torch.equal(s.ids[s.index], group_ids)


def test_group_stats_integer_scores_and_bad_inputs():
    s = group_stats(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 1]))
    assert s.mean.dtype == torch.get_default_dtype() and s.equal.tolist() == [True, True]
    with pytest.raises(ValueError, match="shape"):
        group_stats(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        group_stats(torch.zeros(3), torch.zeros(3))
