"""TokenEntropy and EntropyDynamics against torch.distributions and NumPy covariances."""

from __future__ import annotations

import numpy as np
import torch

from rlvr_lightning.functional import covariance_stats, entropy_from_logits, token_entropy_stats
from rlvr_lightning.metrics import EntropyDynamics, TokenEntropy


def _batch(seed: int, b: int = 6, t: int = 9, v: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g) * 2
    mask = torch.arange(t).expand(b, t) < torch.randint(1, t + 1, (b, 1), generator=g)
    adv = torch.randn(b, 1, generator=g).expand(b, t).clone()
    adv[0] = 0.0  # a group with equal rewards
    logp = torch.log_softmax(logits, -1).gather(-1, torch.randint(0, v, (b, t, 1), generator=g)).squeeze(-1)
    return logits, mask, adv, logp


def test_token_entropy_matches_categorical():
    logits, mask, adv, _ = _batch(0)
    ref_h = torch.distributions.Categorical(logits=logits).entropy()
    m = TokenEntropy()
    m.update(entropy_from_logits(logits), mask, adv)
    got = m.compute()
    for key, sel in (("all", mask), ("pos", mask & (adv > 0)), ("neg", mask & (adv < 0))):
        vals = [float(ref_h[i, j]) for i in range(6) for j in range(9) if sel[i, j]]
        assert abs(float(got[key]) - np.mean(vals)) < 1e-5, key
    fun = token_entropy_stats(entropy_from_logits(logits), mask, adv)
    for key in got:
        torch.testing.assert_close(fun[key], got[key], rtol=1e-12, atol=1e-12)


def test_token_entropy_accumulates_like_one_batch():
    batches = [_batch(s) for s in range(3)]
    m = TokenEntropy()
    for logits, mask, adv, _ in batches:
        m.update(entropy_from_logits(logits), mask, adv)
    whole = token_entropy_stats(
        torch.cat([entropy_from_logits(b[0]) for b in batches]),
        torch.cat([b[1] for b in batches]),
        torch.cat([b[2] for b in batches]),
    )
    for key, v in m.compute().items():
        torch.testing.assert_close(v, whole[key], rtol=1e-12, atol=1e-12)
    no_adv = TokenEntropy()
    no_adv.update(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    out = no_adv.compute()
    assert float(out["all"]) == 1.0 and torch.isnan(out["pos"]) and torch.isnan(out["neg"])


def numpy_cov_parts(logp, adv, mask):
    sel = mask.numpy()
    a, lp = adv.numpy().astype(np.float64)[sel], logp.numpy().astype(np.float64)[sel]
    total = np.cov(np.stack([a, lp]), bias=True)[0, 1]
    centered = (a - a.mean()) * (lp - lp.mean())
    return total, centered[a > 0].sum() / a.size, centered[a <= 0].sum() / a.size


def test_covariance_matches_numpy_and_parts_sum():
    _, mask, adv, logp = _batch(4)
    total, pos, neg = numpy_cov_parts(logp, adv, mask)
    m = EntropyDynamics()
    m.update(logp, adv, mask)
    for out in (m.compute(), covariance_stats(logp, adv, mask)):
        assert abs(float(out["cov"]) - total) < 1e-6
        assert abs(float(out["cov_pos"]) - pos) < 1e-6
        assert abs(float(out["cov_neg"]) - neg) < 1e-6
        assert abs(float(out["cov_pos"] + out["cov_neg"] - out["cov"])) < 1e-12


def test_covariance_accumulates_with_global_means():
    batches = [_batch(s) for s in range(5, 8)]
    m = EntropyDynamics()
    for _, mask, adv, logp in batches:
        m.update(logp, adv + 0.3, mask)  # shifted so the batch means differ from the global one
    cat = [torch.cat([b[i] for b in batches]) for i in (3, 2, 1)]
    total, pos, neg = numpy_cov_parts(cat[0], cat[1] + 0.3, cat[2])
    out = m.compute()
    assert abs(float(out["cov"]) - total) < 1e-6
    assert abs(float(out["cov_pos"]) - pos) < 1e-6
    assert abs(float(out["cov_neg"]) - neg) < 1e-6
