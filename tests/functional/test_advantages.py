"""Advantage estimators against naive per-group Python loops and hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

import rlvr_lightning.functional as F


def _naive(scores, gids, kind, eps=1e-6):
    out = []
    for i, (r, g) in enumerate(zip(scores.tolist(), gids.tolist())):
        members = [s for s, h in zip(scores.tolist(), gids.tolist()) if h == g]
        n = len(members)
        if n < 2 or max(members) == min(members):
            out.append(0.0)
            continue
        mean = sum(members) / n
        std = math.sqrt(sum((m - mean) ** 2 for m in members) / (n - 1))
        if kind == "grpo":
            out.append((r - mean) / (std + eps))
        elif kind == "drgrpo":
            out.append(r - mean)
        else:  # rloo: minus the mean of the others
            out.append(r - (sum(members) - r) / (n - 1))
    return torch.tensor(out, dtype=torch.float64)


def _random(seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = [1, 2, 3, 5, 4, 4]  # unequal groups, one singleton
    gids = torch.cat([torch.full((s,), gid) for s, gid in zip(sizes, [17, -3, 5, 1000, 2, 8])])
    scores = torch.randint(0, 4, (len(gids),), generator=gen).double()
    scores[-4:] = 1.0  # an all-equal group
    perm = torch.randperm(len(gids), generator=gen)
    return scores[perm], gids[perm]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["grpo", "drgrpo", "rloo"])
def test_group_advantages_match_naive_loop(seed, kind):
    scores, gids = _random(seed)
    if kind == "rloo":
        ours = F.rloo_advantages(scores, gids)
    else:
        ours = F.grpo_advantages(scores, gids, scale_by_std=kind == "grpo")
    torch.testing.assert_close(ours, _naive(scores, gids, kind), atol=1e-6, rtol=0)


def test_grpo_hand_worked():
    # mean 0.25, unbiased std sqrt(0.25) = 0.5: (1 - 0.25) / 0.5 = 1.5, (0 - 0.25) / 0.5 = -0.5
    adv = F.grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.long), eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_equal_and_singleton_groups_are_exactly_zero():
    scores = torch.tensor([0.1, 0.1, 0.1, 0.7], dtype=torch.float32)
    gids = torch.tensor([4, 4, 4, 9])
    for adv in (
        F.grpo_advantages(scores, gids),
        F.grpo_advantages(scores, gids, scale_by_std=False),
        F.rloo_advantages(scores, gids),
    ):
        assert torch.equal(adv, torch.zeros(4))


def test_rloo_identity():
    scores, gids = _random(3)
    g = torch.tensor([(gids == x).sum() for x in gids.tolist()], dtype=torch.float64)
    dr = F.grpo_advantages(scores, gids, scale_by_std=False)
    torch.testing.assert_close(
        F.rloo_advantages(scores, gids), torch.where(g > 1, g / (g - 1).clamp(min=1) * dr, 0)
    )


def test_integer_and_bool_scores():
    adv = F.grpo_advantages(
        torch.tensor([True, False, False, False]), torch.zeros(4, dtype=torch.long), eps=0.0
    )
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_reinforce_pp_baseline_matches_numpy():
    import numpy as np

    scores, gids = _random(4)
    gen = torch.Generator().manual_seed(4)
    mask = torch.rand(len(scores), 6, generator=gen) < 0.7
    mask[:, 0] = True
    centered = []
    for r, g in zip(scores.tolist(), gids.tolist()):
        members = [s for s, h in zip(scores.tolist(), gids.tolist()) if h == g]
        centered.append(0.0 if len(members) < 2 else r - np.mean(members))
    m = mask.numpy()
    tok = np.repeat(np.array(centered)[:, None], 6, axis=1)
    vals = tok[m]
    expected = np.where(m, (tok - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8), 0.0)
    ours = F.reinforce_pp_baseline_advantages(scores, gids, mask)
    torch.testing.assert_close(ours, torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="group_ids"):
        F.grpo_advantages(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        F.rloo_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        F.reinforce_pp_baseline_advantages(torch.zeros(3), torch.zeros(3, dtype=torch.long), torch.ones(2, 4))


def test_signed_reward_advantages_match_a_naive_loop():
    from rlvr_lightning.functional import signed_reward_advantages

    scores = torch.tensor([1.0, 0.0, 0.5, 0.49, -1.0, 2.0])
    want = torch.tensor([1.0 if s >= 0.5 else -1.0 for s in scores.tolist()])
    assert torch.equal(signed_reward_advantages(scores), want)
    assert torch.equal(signed_reward_advantages(scores, threshold=1.0), torch.tensor([1.0, -1, -1, -1, -1, 1]))
    assert torch.equal(signed_reward_advantages(torch.tensor([1, 0])), torch.tensor([1.0, -1.0]))  # int scores
