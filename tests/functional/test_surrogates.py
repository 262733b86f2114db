"""Surrogate losses against per-token transcriptions of the papers' equations; gradients; padding."""

from __future__ import annotations

import math

import pytest
import torch

import rlvr_lightning.functional as F


def _batch(seed=0, b=6, t=8):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[:, 0] = True
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.5
    adv = torch.randn(b, t, generator=gen, dtype=torch.float64)
    return logp, old, adv, mask


def _ppo_tok(lp, old, a, el, eh, c):
    r = math.exp(max(min(lp - old, 20), -20))
    loss = -min(r * a, min(max(r, 1 - el), 1 + eh) * a)
    if c is not None and a < 0:
        loss = min(loss, -c * a)
    return loss


@pytest.mark.parametrize("el,eh,c", [(0.2, 0.2, None), (0.2, 0.28, None), (0.1, 0.3, 3.0), (0.2, 0.2, 1.2)])
def test_clipped_matches_loop(el, eh, c):
    logp, old, adv, mask = _batch()
    loss, st = F.clipped_surrogate(logp, old, adv, mask, eps_low=el, eps_high=eh, dual_clip=c)
    n = int(mask.sum())
    clipped = low = high = dual = 0
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if not mask[i, t]:
                assert loss[i, t] == 0
                continue
            lp, o, a = logp[i, t].item(), old[i, t].item(), adv[i, t].item()
            assert loss[i, t].item() == pytest.approx(_ppo_tok(lp, o, a, el, eh, c), abs=1e-12)
            r = math.exp(lp - o)
            hi, lo = a > 0 and r > 1 + eh, a < 0 and r < 1 - el
            clipped, high, low = clipped + (hi or lo), high + hi, low + lo
            noclip = -min(r * a, min(max(r, 1 - el), 1 + eh) * a)
            dual += c is not None and a < 0 and noclip > -c * a
    assert st["clip_frac"].item() == pytest.approx(clipped / n)
    assert st["clip_frac_high"].item() == pytest.approx(high / n)
    assert st["clip_frac_low"].item() == pytest.approx(low / n)
    assert st["dual_clip_frac"].item() == pytest.approx(dual / n)
    assert st["approx_kl"].item() == pytest.approx(float((old - logp)[mask].mean()))
    assert all(not v.requires_grad and v.dim() == 0 for v in st.values())


def test_dual_clip_caps_negative_advantage_loss():
    lp = torch.log(torch.tensor([[10.0]]))
    loss, st = F.clipped_surrogate(
        lp, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1, dtype=torch.bool), dual_clip=3.0
    )
    assert loss.item() == pytest.approx(3.0) and st["dual_clip_frac"].item() == 1.0


@pytest.mark.parametrize("fn", ["clipped", "unclipped", "cispo", "gspo"])
def test_gradients_match_naive_autograd_and_padding_is_inert(fn):
    logp, old, adv, mask = _batch(1)
    gen = torch.Generator().manual_seed(7)
    junk = torch.randn(logp.shape, generator=gen, dtype=torch.float64) * 50

    def ours(lp, o, a):
        f = {
            "clipped": F.clipped_surrogate,
            "unclipped": F.unclipped_surrogate,
            "cispo": F.cispo_surrogate,
            "gspo": F.gspo_surrogate,
        }[fn]
        return F.aggregate(f(lp, o, a, mask)[0], mask)

    def naive(lp):  # per-token transcription of each equation, built only from valid tokens
        total = 0.0
        for i in range(mask.shape[0]):
            idx = mask[i].nonzero().squeeze(-1)
            lr = lp[i, idx] - old[i, idx]
            a = adv[i, idx]
            if fn == "clipped":
                r = lr.clamp(-20, 20).exp()
                tok = -torch.minimum(r * a, r.clamp(0.8, 1.2) * a)
            elif fn == "unclipped":
                tok = -lr.exp() * a
            elif fn == "cispo":
                tok = -lr.exp().clamp(0.8, 1.2).detach() * a * lp[i, idx]
            else:
                s = (lp[i, idx] - lp[i, idx].detach() + lr.mean().detach()).exp()
                tok = -torch.minimum(s * a, s.clamp(1 - 3e-4, 1 + 4e-4) * a)
            total = total + tok.sum()
        return total / mask.sum()

    lp1 = logp.clone().requires_grad_(True)
    ref = naive(lp1)
    (g_ref,) = torch.autograd.grad(ref, lp1)
    # garbage on padding in every input must change neither the value nor the gradient
    lp2 = torch.where(mask, logp, junk).requires_grad_(True)
    val = ours(lp2, torch.where(mask, old, -junk), torch.where(mask, adv, junk))
    (g,) = torch.autograd.grad(val, lp2)
    torch.testing.assert_close(val, ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
    assert torch.all(g[~mask] == 0)


def test_gspo_sequence_ratio_and_clip_stats():
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
    logp = old + torch.tensor([[0.003, -0.0, 0.0], [-0.003, -0.003, 9.0]])  # seq log-ratios 1e-3, -3e-3
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    loss, st = F.gspo_surrogate(logp, old, adv, mask)
    torch.testing.assert_close(loss, torch.tensor([[-(1 + 4e-4)] * 3, [1 - 3e-4, 1 - 3e-4, 0.0]]))
    assert st["clip_frac"].item() == 1.0 and st["clip_frac_high"].item() == pytest.approx(0.6)


def test_cispo_keeps_gradient_on_clipped_tokens():
    lp = torch.log(torch.tensor([[2.0, 0.1]], dtype=torch.float64)).requires_grad_(True)
    loss, _ = F.cispo_surrogate(
        lp,
        torch.zeros(1, 2, dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.bool),
    )
    (g,) = torch.autograd.grad(loss.sum(), lp)
    torch.testing.assert_close(g, torch.tensor([[-1.2, -0.8]], dtype=torch.float64))


def test_bad_hyperparameters():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="dual_clip"):
        F.clipped_surrogate(logp, old, adv, mask, dual_clip=0.5)
    with pytest.raises(ValueError, match="eps_low"):
        F.clipped_surrogate(logp, old, adv, mask, eps_low=1.5)
    with pytest.raises(ValueError, match="eps_high"):
        F.cispo_surrogate(logp, old, adv, mask, eps_high=-0.1)


def test_bf16_inputs():
    logp, old, adv, mask = (x.to(torch.bfloat16) if x.is_floating_point() else x for x in _batch())
    for f in (F.clipped_surrogate, F.unclipped_surrogate, F.cispo_surrogate, F.gspo_surrogate):
        loss, st = f(logp, old, adv, mask)
        assert loss.dtype == torch.bfloat16 and torch.isfinite(loss).all()
