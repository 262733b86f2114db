"""Token-selection reweightings against naive selections: sign-only, random positive drop, high-entropy
tokens, Clip-Cov and KL-Cov."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _comp_inputs import B, T, make_inputs

from rlvr_lightning.components import (
    ClipCov,
    HighEntropyTokens,
    KLCov,
    NegativeOnly,
    PositiveOnly,
    RandomPositiveDrop,
    ReweightContext,
    Uniform,
)


def _ctx(x, **kw) -> ReweightContext:
    return ReweightContext(
        advantages=x.advantages, logp=x.logp, old_logp=x.old_logp, entropy=x.entropy, mask=x.mask, **kw
    )


def _naive_cov(x) -> np.ndarray:
    m = x.mask.numpy()
    a, lp = x.advantages.double().numpy(), x.logp.double().numpy()
    return np.where(m, (a - a[m].mean()) * (lp - lp[m].mean()), 0.0)


def test_sign_only():
    x = make_inputs()
    assert (x.advantages[x.mask] == 0).any()  # zero-advantage tokens are kept by both
    wp, wn = PositiveOnly()(_ctx(x)), NegativeOnly()(_ctx(x))
    for i in range(B):
        for t in range(T):
            a, v = float(x.advantages[i, t]), bool(x.mask[i, t])
            assert float(wp[i, t]) == float(v and a >= 0)
            assert float(wn[i, t]) == float(v and a <= 0)


def test_random_positive_drop():
    torch.manual_seed(0)
    big_mask = torch.ones(64, 100, dtype=torch.bool)
    big_mask[:, 80:] = False
    adv = torch.randn(64, 1).expand(64, 100).contiguous()
    ctx = ReweightContext(advantages=adv, logp=adv, old_logp=adv, entropy=adv.abs(), mask=big_mask, step=7)
    comp = RandomPositiveDrop(frac=0.3, seed=1)
    w = comp(ctx)
    pos, rest = big_mask & (adv > 0), big_mask & (adv <= 0)
    assert (w[rest] == 1).all() and (w[~big_mask] == 0).all()
    dropped = float((w[pos] == 0).float().mean())
    assert abs(dropped - 0.3) < 0.03  # ~2,500 positive tokens: 4 standard deviations
    assert torch.equal(w, RandomPositiveDrop(frac=0.3, seed=1)(ctx))  # a function of (seed, step): resumable
    ctx.step = 8
    assert not torch.equal(w, comp(ctx))
    assert torch.equal(RandomPositiveDrop(frac=0.0)(ctx), Uniform()(ctx))
    assert (RandomPositiveDrop(frac=1.0)(ctx)[pos] == 0).all()


@pytest.mark.parametrize(("rho", "n_keep"), [(0.2, 7), (0.5, 18), (1.0, 35)])  # ceil(rho * 35)
def test_high_entropy_tokens_keep_the_top_fraction(rho, n_keep):
    x = make_inputs()
    assert int(x.mask.sum()) == 35
    w = HighEntropyTokens(rho=rho)(_ctx(x))
    assert int(w.sum()) == n_keep
    ent = [(float(x.entropy[i, t]), i, t) for i in range(B) for t in range(T) if x.mask[i, t]]
    top = {(i, t) for _, i, t in sorted(ent, reverse=True)[:n_keep]}
    for i in range(B):
        for t in range(T):
            assert float(w[i, t]) == float((i, t) in top)


def test_clip_cov_drops_random_tokens_inside_the_band():
    x = make_inputs()
    cov = _naive_cov(x)
    lower, upper = 0.05, 2.0
    band = x.mask.numpy() & (cov > lower) & (cov < upper)
    n_valid = int(x.mask.sum())
    ratio = 0.1  # floor(0.1 * 35) = 3 tokens
    assert band.sum() > 3
    comp = ClipCov(clip_ratio=ratio, lower=lower, upper=upper, seed=5)
    w = comp(_ctx(x, step=2)).numpy()
    dropped = x.mask.numpy() & (w == 0)
    assert dropped.sum() == int(np.floor(ratio * n_valid))
    assert (band | ~dropped).all()  # every dropped token lies in the band
    assert (w[x.mask.numpy() & ~dropped] == 1).all()
    np.testing.assert_array_equal(
        w, ClipCov(clip_ratio=ratio, lower=lower, upper=upper, seed=5)(_ctx(x, step=2))
    )
    draws = {tuple(np.flatnonzero(comp(_ctx(x, step=s)).numpy() == 0)) for s in range(10)}
    assert len(draws) > 1  # a new draw each step


def test_kl_cov_penalizes_the_top_covariance_tokens():
    x = make_inputs()
    cov = _naive_cov(x)
    comp = KLCov(k_ratio=0.2, coef=0.7)  # floor(0.2 * 35) = 7 tokens
    assert torch.equal(comp(_ctx(x)), Uniform()(_ctx(x)))
    logp = x.logp.clone().requires_grad_()
    pen = comp.extra_loss(_ctx(x), logp)
    pen_v = pen.detach()
    order = sorted(((cov[i, t], i, t) for i in range(B) for t in range(T) if x.mask[i, t]), reverse=True)
    top = {(i, t) for _, i, t in order[:7]}
    for i in range(B):
        for t in range(T):
            exp = 0.7 * abs(float(x.logp[i, t] - x.old_logp[i, t])) if (i, t) in top else 0.0
            assert float(pen_v[i, t]) == pytest.approx(exp, abs=1e-6)
    pen.sum().backward()
    sign = torch.sign(x.logp - x.old_logp)
    for i, t in top:
        assert float(logp.grad[i, t]) == pytest.approx(0.7 * float(sign[i, t]))
    assert int((logp.grad != 0).sum()) == 7


def test_random_reweightings_draw_differently_per_micro_batch_and_rank_but_reproducibly():
    from rlvr_lightning.components import ClipCov, RandomPositiveDrop, ReweightContext

    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(8, 16, generator=gen).abs()  # all positive: every token can be dropped
    logp = -torch.rand(8, 16, generator=gen)
    mask = torch.ones(8, 16, dtype=torch.bool)

    def ctx(key):
        return ReweightContext(advantages=adv, logp=logp, old_logp=logp, entropy=torch.zeros_like(adv), mask=mask,
                               step=5, sample_key=key)

    drop = RandomPositiveDrop(frac=0.5)
    assert torch.equal(drop(ctx(0)), drop(ctx(0)))
    assert not torch.equal(drop(ctx(0)), drop(ctx(1)))
    cov = ClipCov(clip_ratio=0.5, lower=-10.0, upper=10.0)
    assert torch.equal(cov(ctx(3)), cov(ctx(3))) and not torch.equal(cov(ctx(3)), cov(ctx(4)))
