"""Pass@k, Avg@k, Maj@k and the PassAtK metric against exact and naive references."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from rlvr_lightning.functional import avg_at_k, group_counts, maj_at_k, pass_at_k
from rlvr_lightning.metrics import PassAtK


def comb_pass_at_k(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_pass_at_k_matches_binomial_formula():
    cases = [(n, c, k) for n in range(1, 21) for c in range(n + 1) for k in range(1, n + 1)]
    n = torch.tensor([x[0] for x in cases])
    c = torch.tensor([x[1] for x in cases])
    for k in range(1, 21):
        sel = n >= k
        got = pass_at_k(n[sel], c[sel], k)
        want = torch.tensor(
            [comb_pass_at_k(int(a), int(b), k) for a, b in zip(n[sel], c[sel])], dtype=torch.float64
        )
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_pass_at_k_matches_enumeration_of_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                want = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert abs(float(pass_at_k(n, c, k)) - want) < 1e-12, (n, c, k)


def test_pass_at_k_large_n_is_stable():
    n = torch.tensor([64, 200, 1000, 1000])
    c = torch.tensor([1, 3, 0, 999])
    for k in (1, 16, 64):
        want = torch.tensor([comb_pass_at_k(int(a), int(b), k) for a, b in zip(n, c)], dtype=torch.float64)
        torch.testing.assert_close(pass_at_k(n, c, k), want, rtol=1e-12, atol=1e-13)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match=r"k=5.*n=4"):
        pass_at_k(torch.tensor([4, 8]), torch.tensor([1, 1]), 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(torch.tensor([4]), torch.tensor([5]), 1)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)


def test_avg_at_k_matches_numpy():
    correct = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) > 0.6
    np.testing.assert_allclose(avg_at_k(correct).numpy(), correct.numpy().mean(axis=1), rtol=0, atol=1e-15)


def naive_maj(ids: list[int], ok: list[int]) -> float:
    votes = Counter(i for i in ids if i >= 0)
    if not votes:
        return 0.0
    best = max(votes.values())
    winner = next(i for i in ids if i >= 0 and votes[i] == best)  # first-appearing among the tied
    return float(ok[ids.index(winner)])


def test_maj_at_k_matches_naive_vote():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(-1, 4, (200, 6), generator=g)
    ok = torch.randint(0, 2, (200, 6), generator=g)
    want = torch.tensor([naive_maj(i, o) for i, o in zip(ids.tolist(), ok.tolist())], dtype=torch.float64)
    torch.testing.assert_close(maj_at_k(ids, ok), want, rtol=0, atol=0)


def test_group_counts_matches_loop():
    g = torch.Generator().manual_seed(2)
    gid = torch.randint(0, 5, (40,), generator=g) * 3
    correct = torch.randint(0, 2, (40,), generator=g)
    n, c = group_counts(correct, gid)
    for j, q in enumerate(sorted(set(gid.tolist()))):
        members = [i for i in range(40) if int(gid[i]) == q]
        assert int(n[j]) == len(members)
        assert int(c[j]) == sum(int(correct[i]) for i in members)


def test_pass_at_k_metric_accumulates_like_one_batch():
    g = torch.Generator().manual_seed(3)
    n = torch.randint(8, 20, (30,), generator=g)
    c = (torch.rand(30, generator=g) * (n + 1)).floor().long().clamp(max=n)
    maj = torch.randint(0, 2, (30,), generator=g)
    whole = PassAtK(ks=(1, 4, 8), majority=True)
    whole.update(n, c, maj)
    parts = PassAtK(ks=(1, 4, 8), majority=True)
    for sl in (slice(0, 7), slice(7, 19), slice(19, 30)):
        parts.update(n[sl], c[sl], maj[sl])
    a, b = whole.compute(), parts.compute()
    assert set(a) == {"pass@1", "pass@4", "pass@8", "avg", "maj"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)
    for k in (1, 4, 8):
        ref = np.mean([comb_pass_at_k(int(x), int(y), k) for x, y in zip(n, c)])
        assert abs(float(a[f"pass@{k}"]) - ref) < 1e-12
    assert abs(float(a["avg"]) - np.mean(c.numpy() / n.numpy())) < 1e-12
    assert abs(float(a["maj"]) - float(maj.double().mean())) < 1e-12


def test_pass_at_k_metric_rejects_k_above_n():
    m = PassAtK(ks=(8,))
    with pytest.raises(ValueError, match=r"k=8.*n=4"):
        m.update(torch.tensor([4]), torch.tensor([1]))
    with pytest.raises(ValueError, match="majority_correct"):
        PassAtK(majority=True).update(torch.tensor([4]), torch.tensor([1]))
