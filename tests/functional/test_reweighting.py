"""PAR weights, covariance score and the entropy baselines' token selections, against naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rlvr_lightning.functional as F


def _batch(seed=0, b=8, t=12):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[:, 0] = True
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.randn(b, 1, generator=gen, dtype=torch.float64).expand(b, t).contiguous()
    adv[0] = 0.0
    return logp, old, adv, mask


def test_par_weights_loop_and_tensor_lambda():
    _, _, adv, mask = _batch()
    for lam in (0.0, 0.37, 1.0, torch.tensor(0.6, dtype=torch.float64)):
        w = F.par_weights(adv, mask, lam=lam)
        for i in range(adv.shape[0]):
            for t in range(adv.shape[1]):
                expected = 0.0 if not mask[i, t] else (float(lam) if adv[i, t] > 0 else 1.0)
                assert w[i, t].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="lam"):
        F.par_weights(adv, mask, lam=1.5)


def _loss(logp, old, adv, mask, lam):
    tok, _ = F.clipped_surrogate(logp, old, adv, mask)
    return F.aggregate(tok * F.par_weights(adv, mask, lam=lam), mask)


def test_par_lambda_one_is_uniform_and_zero_blocks_positive_tokens():
    logp, old, adv, mask = _batch(1)
    x = logp.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(_loss(x, old, adv, mask, 1.0), x)
    (gu,) = torch.autograd.grad(F.aggregate(F.clipped_surrogate(x, old, adv, mask)[0], mask), x)
    torch.testing.assert_close(g1, gu, atol=0, rtol=0)
    (g0,) = torch.autograd.grad(_loss(x, old, adv, mask, 0.0), x)
    pos = (adv > 0) & mask
    assert pos.any() and torch.all(g0[pos] == 0)
    torch.testing.assert_close(
        g0[~pos], gu[~pos], atol=0, rtol=0
    )  # normalizer unchanged: others keep their grad


def test_covariance_score_numpy():
    logp, _, adv, mask = _batch(2)
    garbage_lp = torch.where(mask, logp, torch.full_like(logp, 1e5))
    c = F.covariance_score(garbage_lp, adv, mask)
    m = mask.numpy()
    a, lp = adv.numpy(), logp.numpy()
    expected = np.where(m, (a - a[m].mean()) * (lp - lp[m].mean()), 0.0)
    np.testing.assert_allclose(c.numpy(), expected, atol=1e-12)


def test_sign_masks_and_random_drop():
    _, _, adv, mask = _batch(3)
    assert torch.equal(F.sign_mask(adv, mask, keep="nonnegative"), (adv >= 0) & mask)
    assert torch.equal(F.sign_mask(adv, mask, keep="nonpositive"), (adv <= 0) & mask)
    with pytest.raises(ValueError, match="keep"):
        F.sign_mask(adv, mask, keep="positive")
    big_adv = torch.ones(200, 50, dtype=torch.float64)
    big_adv[:, :10] = -1.0
    keep = F.random_drop_positive(
        big_adv,
        torch.ones(200, 50, dtype=torch.bool),
        drop_frac=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    assert keep[:, :10].all()
    assert abs(keep[:, 10:].double().mean().item() - 0.7) < 0.02  # 8000 Bernoulli draws: 4.7 sigma band
    again = F.random_drop_positive(
        big_adv,
        torch.ones(200, 50, dtype=torch.bool),
        drop_frac=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(keep, again)


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5, 1.0])
def test_top_entropy_mask_matches_sorting(rho):
    gen = torch.Generator().manual_seed(4)
    ent = torch.rand(6, 9, generator=gen)
    mask = torch.rand(6, 9, generator=gen) < 0.6
    sel = F.top_entropy_mask(torch.where(mask, ent, torch.full_like(ent, 99.0)), mask, rho=rho)
    valid = sorted(ent[mask].tolist(), reverse=True)
    k = math.ceil(rho * len(valid) - 1e-9)
    assert int(sel.sum()) == k and not (sel & ~mask).any()
    assert sorted(ent[sel].tolist(), reverse=True) == valid[:k]


def test_kl_cov_select_and_penalty():
    logp, old, adv, mask = _batch(5, b=20, t=30)
    sel = F.kl_cov_select(logp, adv, mask, k_ratio=0.05)
    cov = F.covariance_score(logp, adv, mask)
    k = max(1, int(0.05 * int(mask.sum())))
    assert int(sel.sum()) == k
    assert sorted(cov[sel].tolist(), reverse=True) == sorted(cov[mask].tolist(), reverse=True)[:k]
    x = logp.clone().requires_grad_(True)
    pen = F.kl_cov_penalty(x, old, adv, mask, k_ratio=0.05, coef=2.0)
    torch.testing.assert_close(pen, torch.where(sel, 2.0 * (logp - old).abs(), 0.0))
    (g,) = torch.autograd.grad(pen.sum(), x)
    torch.testing.assert_close(g, torch.where(sel, 2.0 * torch.sign(logp - old), 0.0))


def test_clip_cov_weights():
    logp, _, adv, mask = _batch(6, b=30, t=40)
    adv = adv * 4
    cov = F.covariance_score(logp, adv, mask)
    band = mask & (cov > 1) & (cov < 5)
    exclude = torch.zeros_like(mask)
    exclude[:, :3] = True
    w = F.clip_cov_weights(
        logp, adv, mask, clip_ratio=0.01, exclude=exclude, generator=torch.Generator().manual_seed(0)
    )
    dropped = mask & (w == 0)
    n_drop = min(max(1, int(0.01 * int(mask.sum()))), int((band & ~exclude).sum()))
    assert int(dropped.sum()) == n_drop > 0
    assert (band & ~exclude)[dropped].all()
    assert torch.equal(w[~mask], torch.zeros_like(w[~mask])) and (w[mask & ~dropped] == 1).all()
    # different generators draw different tokens from the same band
    draws = {
        tuple(
            F.clip_cov_weights(logp, adv, mask, clip_ratio=0.01, generator=torch.Generator().manual_seed(s))
            .eq(0)
            .logical_and(mask)
            .nonzero()
            .flatten()
            .tolist()
        )
        for s in range(5)
    }
    assert len(draws) > 1


def test_selection_errors():
    logp, _, adv, mask = _batch()
    with pytest.raises(ValueError, match="rho"):
        F.top_entropy_mask(logp, mask, rho=0.0)
    with pytest.raises(ValueError, match="clip_ratio"):
        F.clip_cov_weights(logp, adv, mask, clip_ratio=0.0)
    with pytest.raises(ValueError, match="k_ratio"):
        F.kl_cov_select(logp, adv, mask, k_ratio=-1.0)
    with pytest.raises(ValueError, match="drop_frac"):
        F.random_drop_positive(adv, mask, drop_frac=2.0)
