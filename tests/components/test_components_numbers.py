"""Component outputs against naive loops / NumPy transcriptions of each equation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _comp_inputs import B, T, make_inputs

from rlvr_lightning.components import (
    CISPO,
    GRPO,
    KL,
    RLOO,
    AdaptiveEntropyBonus,
    ConstantEntropyBonus,
    DrGRPO,
    NoClip,
    NoEntropyBonus,
    NoKL,
    PPOClip,
    ReinforcePPBaseline,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
    TokenMean,
)


def _group_members(x, i):
    return [j for j in range(B) if int(x.group_ids[j]) == int(x.group_ids[i])]


def test_grpo_drgrpo_rloo_match_loops():
    x = make_inputs()
    s = x.scores.tolist()
    grpo, dr, rloo = GRPO(eps=1e-6), DrGRPO(), RLOO()
    a_g, a_d, a_r = (c(x.scores, x.group_ids, x.mask) for c in (grpo, dr, rloo))
    for i in range(B):
        g = [s[j] for j in _group_members(x, i)]
        mean = sum(g) / len(g)
        std = math.sqrt(sum((v - mean) ** 2 for v in g) / (len(g) - 1))
        exp_g = (s[i] - mean) / (std + 1e-6)
        exp_r = s[i] - (sum(g) - s[i]) / (len(g) - 1)
        for t in range(T):
            if x.mask[i, t]:
                assert float(a_g[i, t]) == pytest.approx(exp_g, rel=1e-5)
                assert float(a_d[i, t]) == pytest.approx(s[i] - mean, abs=1e-6)
                assert float(a_r[i, t]) == pytest.approx(exp_r, abs=1e-6)
            else:
                assert a_g[i, t] == 0 and a_d[i, t] == 0 and a_r[i, t] == 0


def test_reinforce_pp_baseline_matches_numpy():
    x = make_inputs()
    out = ReinforcePPBaseline()(x.scores, x.group_ids, x.mask)
    s = x.scores.numpy().astype(np.float64)
    gid = x.group_ids.numpy()
    centered = np.array([s[i] - s[gid == gid[i]].mean() for i in range(B)])
    m = x.mask.numpy()
    vals = np.broadcast_to(centered[:, None], (B, T))[m]
    expected = (vals - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8)
    np.testing.assert_allclose(out.numpy()[m], expected, rtol=1e-5, atol=1e-6)
    assert (out[~x.mask] == 0).all()


def _ppo_naive(lp, old, a, el, eh, c):
    r = math.exp(lp - old)
    loss = max(-a * r, -a * min(max(r, 1 - el), 1 + eh))
    if c is not None and a < 0:
        loss = min(loss, -c * a)
    return loss


@pytest.mark.parametrize(
    ("eps_low", "eps_high", "dual_clip"),
    [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.28, 0.2, None), (0.12, 0.2, 1.5)],
    ids=["symmetric", "clip-higher", "clip-lower", "clip-tighter"],
)
def test_ppo_clip_parameter_sets_match_loop(eps_low, eps_high, dual_clip):
    x = make_inputs()
    old = x.logp + torch.linspace(-1.5, 1.5, B * T).reshape(B, T)  # ratios from e^-1.5 to e^1.5: every branch
    old = torch.where(x.mask, old, torch.zeros(()))
    loss, stats = PPOClip(eps_low, eps_high, dual_clip)(x.logp, old, x.advantages, x.mask)
    for i in range(B):
        for t in range(T):
            if x.mask[i, t]:
                exp = _ppo_naive(
                    float(x.logp[i, t]),
                    float(old[i, t]),
                    float(x.advantages[i, t]),
                    eps_low,
                    eps_high,
                    dual_clip,
                )
                assert float(loss[i, t]) == pytest.approx(exp, rel=1e-5, abs=1e-6)
    assert 0 < float(stats["clip_frac"]) < 1


def test_noclip_and_cispo_gradients():
    x = make_inputs()
    lp = x.logp.clone().requires_grad_()
    NoClip()(lp, x.old_logp, x.advantages, x.mask)[0].sum().backward()
    r = torch.exp(x.logp - x.old_logp)
    torch.testing.assert_close(lp.grad, torch.where(x.mask, -x.advantages * r, torch.zeros(())))
    lp2 = x.logp.clone().requires_grad_()
    CISPO(eps_low=1.0, eps_high=0.28)(lp2, x.old_logp, x.advantages, x.mask)[0].sum().backward()
    w = r.clamp(0.0, 1.28)  # d/dlogp of -sg(w) A logp = -w A: every token keeps a gradient
    torch.testing.assert_close(lp2.grad, torch.where(x.mask, -w * x.advantages, torch.zeros(())))


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_matches_formula(kind):
    x = make_inputs()
    out = KL(kind=kind, coef=0.5)(x.logp, x.ref_logp, x.mask)
    d = (x.ref_logp - x.logp).double().numpy()
    exp = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[kind] * 0.5
    m = x.mask.numpy()
    np.testing.assert_allclose(out.numpy()[m], exp[m], rtol=1e-5, atol=1e-6)
    assert NoKL.needs_reference is False and KL.needs_reference is True
    assert (NoKL()(x.logp, None, x.mask) == 0).all()


def test_entropy_bonus_values():
    x = make_inputs()
    for alpha in (0.002, -0.001):  # a negative alpha penalizes entropy
        out = ConstantEntropyBonus(alpha=alpha)(x.entropy, x.mask)
        torch.testing.assert_close(out, torch.where(x.mask, -alpha * x.entropy, torch.zeros(())))
        assert ConstantEntropyBonus(alpha=alpha).log_values() == {"entropy_coef": alpha}
    assert AdaptiveEntropyBonus().log_values() == {"entropy_coef": 0.0}
    assert NoEntropyBonus.enabled is False and ConstantEntropyBonus.enabled is True


def test_aggregations_match_loops_and_use_given_normalizers():
    x = make_inputs()
    lens = x.mask.sum(-1).tolist()
    rows = [[float(x.loss[i, t]) for t in range(int(lens[i]))] for i in range(B)]
    n_tok = sum(lens)
    cases = [
        (TokenMean(), sum(map(sum, rows)) / n_tok),
        (SeqMeanTokenSum(), sum(sum(r) for r in rows) / B),
        (SeqMeanTokenMean(), sum(sum(r) / len(r) for r in rows) / B),
        (SeqMeanTokenSumNorm(max_len=16), sum(sum(r) for r in rows) / (B * 16)),
    ]
    for comp, exp in cases:
        assert float(comp(x.loss, x.mask)) == pytest.approx(exp, rel=1e-5)
    # micro-batches with the global normalizers add up to the one-big-batch value
    for comp, exp in cases:
        kw = {"num_tokens": torch.tensor(float(n_tok))} if "tokens" in comp.normalizers else {"num_seqs": B}
        parts = [comp(x.loss[k : k + 2], x.mask[k : k + 2], **kw) for k in range(0, B, 2)]
        assert float(sum(parts)) == pytest.approx(exp, rel=1e-5)
    assert TokenMean.normalizers == ("tokens",) and SeqMeanTokenMean.normalizers == ("seqs",)
