"""PAR and its lambda schedules, and the adaptive entropy coefficient, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from _comp_inputs import B, T, make_inputs

from rlvr_lightning.components import (
    GRPO,
    PAR,
    AdaptiveEntropyBonus,
    EntropyGuidedPAR,
    EpochPAR,
    PPOClip,
    ReweightContext,
    StagePAR,
    TokenMean,
    Uniform,
)


def _ctx(x, **kw) -> ReweightContext:
    return ReweightContext(
        advantages=x.advantages, logp=x.logp, old_logp=x.old_logp, entropy=x.entropy, mask=x.mask, **kw
    )


def _loss_and_grad(reweight, x):
    """The full policy loss of one mini-batch (GRPO, PPO clip, reweight, token-mean) and d loss / d logp."""
    adv = GRPO()(x.scores, x.group_ids, x.mask)
    logp = x.logp.clone().requires_grad_()
    tok, _ = PPOClip()(logp, x.old_logp, adv, x.mask)
    ctx = ReweightContext(advantages=adv, logp=x.logp, old_logp=x.old_logp, entropy=x.entropy, mask=x.mask)
    loss = TokenMean()(tok * reweight(ctx), x.mask)
    loss.backward()
    return loss, logp.grad, adv


def test_par_weights_match_naive_loop():
    x = make_inputs()
    lam = 0.3
    w = PAR(lam=lam)(_ctx(x))
    for i in range(B):
        for t in range(T):
            a = float(x.advantages[i, t])
            expected = 0.0 if not x.mask[i, t] else (lam if a > 0 else 1.0)
            assert float(w[i, t]) == pytest.approx(expected, abs=1e-7), (i, t)
    assert PAR(lam=lam).log_values() == {"lambda": lam}


def test_par_lambda_one_equals_uniform_exactly():
    x = make_inputs()
    loss_p, grad_p, _ = _loss_and_grad(PAR(lam=1.0), x)
    loss_u, grad_u, _ = _loss_and_grad(Uniform(), x)
    assert torch.equal(loss_p, loss_u)
    assert torch.equal(grad_p, grad_u)


def test_par_lambda_zero_silences_positive_tokens():
    x = make_inputs()
    _, grad, adv = _loss_and_grad(PAR(lam=0.0), x)
    pos, neg = x.mask & (adv > 0), x.mask & (adv < 0)
    assert pos.any() and neg.any()
    assert (grad[pos] == 0).all()
    assert (grad[neg] != 0).any()
    _, grad_u, _ = _loss_and_grad(Uniform(), x)
    torch.testing.assert_close(grad[neg], grad_u[neg], rtol=0, atol=0)  # same normalizer, same A<0 gradient


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (25, 0.0), (50, 0.0), (60, 0.2), (75, 0.5), (90, 0.8), (100, 1.0)],
)
def test_stage_par_by_steps(step, expected):
    x = make_inputs()
    comp = StagePAR()
    w = comp(_ctx(x, step=step, total_steps=100))
    assert comp.log_values()["lambda"] == pytest.approx(expected, abs=1e-12)
    pos = x.mask & (x.advantages > 0)
    torch.testing.assert_close(w[pos], torch.full_like(w[pos], expected))


@pytest.mark.parametrize(("epoch", "expected"), [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.5)])
def test_stage_par_by_epochs(epoch, expected):
    # progress = (epoch - 1) / 4 when only epochs are known: 0, .25, .5, .75 -> lambda 0, 0, 0, .5
    comp = StagePAR()
    comp(_ctx(make_inputs(), epoch=epoch, total_epochs=4))
    assert comp.log_values()["lambda"] == pytest.approx(expected, abs=1e-12)


def test_stage_par_custom_start_and_unknown_length():
    comp = StagePAR(start=0.2)
    comp(_ctx(make_inputs(), step=60, total_steps=100))
    assert comp.log_values()["lambda"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="total_steps"):
        StagePAR()(_ctx(make_inputs()))


@pytest.mark.parametrize(
    ("epoch", "total", "expected"),
    [(1, 5, 0.0), (2, 5, 0.25), (4, 5, 0.75), (5, 5, 1.0), (1, 1, 1.0), (2, 3, 0.5)],
)
def test_epoch_par(epoch, total, expected):
    x = make_inputs()
    comp = EpochPAR()
    assert comp.log_values() == {}
    w = comp(_ctx(x, epoch=epoch, total_epochs=total))
    assert comp.log_values() == {"lambda": pytest.approx(expected, abs=1e-12)}
    pos = x.mask & (x.advantages > 0)
    torch.testing.assert_close(w[pos], torch.full_like(w[pos], expected))


def test_epoch_par_needs_total_epochs():
    with pytest.raises(ValueError, match="total_epochs"):
        EpochPAR()(_ctx(make_inputs()))


# entropy sequence and the lambdas after each update, worked by hand with delta=0.2, step=0.05, lam0=0:
# H >= 0.2 raises lambda, H < 0.2 lowers it, always within [0, 1]
SCRIPT_H = [0.5, 0.5, 0.1, 0.3, 0.1, 0.1, 0.1, 0.2, 0.19]
SCRIPT_LAM = [0.05, 0.10, 0.05, 0.10, 0.05, 0.0, 0.0, 0.05, 0.0]


def test_entropy_guided_par_follows_script():
    x = make_inputs()
    comp = EntropyGuidedPAR()
    assert comp.log_values() == {"lambda": 0.0}
    pos = x.mask & (x.advantages > 0)
    for h, lam in zip(SCRIPT_H, SCRIPT_LAM):
        comp.update(h)
        assert comp.log_values()["lambda"] == pytest.approx(lam, abs=1e-12)
        w = comp(_ctx(x))
        torch.testing.assert_close(w[pos], torch.full_like(w[pos], lam), rtol=0, atol=1e-7)


def test_entropy_guided_par_upper_clip_and_resume():
    comp = EntropyGuidedPAR(delta=0.3, step=0.1, lam0=0.85)
    for h, lam in [(0.9, 0.95), (0.9, 1.0), (0.9, 1.0), (0.29, 0.9)]:
        comp.update(h)
        assert comp.lam == pytest.approx(lam, abs=1e-12)
    resumed = EntropyGuidedPAR(delta=0.3, step=0.1, lam0=0.85)
    resumed.load_state_dict(comp.state_dict())
    for h in (0.1, 0.5, 0.1):
        comp.update(h)
        resumed.update(h)
        assert resumed.lam == comp.lam


# alpha after each update with target=0.2, alpha0=0, step=0.001, alpha in [0, 0.0025]:
# H < target raises alpha, otherwise it falls
SCRIPT_ALPHA_H = [0.1, 0.1, 0.1, 0.3, 0.25, 0.25, 0.2, 0.1]
SCRIPT_ALPHA = [0.001, 0.002, 0.0025, 0.0015, 0.0005, 0.0, 0.0, 0.001]


def test_adaptive_entropy_bonus_follows_script():
    x = make_inputs()
    comp = AdaptiveEntropyBonus(target=0.2, alpha0=0.0, step=0.001, alpha_min=0.0, alpha_max=0.0025)
    for h, alpha in zip(SCRIPT_ALPHA_H, SCRIPT_ALPHA):
        comp.update(h)
        assert comp.log_values() == {"entropy_coef": pytest.approx(alpha, abs=1e-12)}
        out = comp(x.entropy, x.mask)
        expected = torch.where(x.mask, -alpha * x.entropy, torch.zeros(()))
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-9)
    resumed = AdaptiveEntropyBonus(target=0.2, step=0.001, alpha_max=0.0025)
    resumed.load_state_dict(comp.state_dict())
    assert resumed.alpha == comp.alpha
