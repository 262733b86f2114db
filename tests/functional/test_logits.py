"""Chunked log-probs/entropy against the naive log_softmax path: values, gradients, bf16, temperature."""

from __future__ import annotations

import pytest
import torch

import rlvr_lightning.functional as F


def _naive(logits, labels, temperature=1.0):
    logsm = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


def _data(shape=(3, 11), v=37, seed=0, dtype=torch.float64, scale=4.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*shape, v, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return logits, torch.randint(0, v, shape, generator=gen)


@pytest.mark.parametrize("chunk", [1, 5, 33, 512])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_match_naive(chunk, temperature):
    logits, labels = _data()
    lp, ent = F.logprobs_and_entropy(logits, labels, chunk_size=chunk, temperature=temperature)
    ref_lp, ref_ent = _naive(logits, labels, temperature)
    assert lp.dtype == torch.float32 and lp.shape == labels.shape
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        F.logprobs_from_logits(logits, labels, temperature=temperature, chunk_size=chunk), lp
    )
    torch.testing.assert_close(F.entropy_from_logits(logits, temperature=temperature, chunk_size=chunk), ent)


@pytest.mark.parametrize("temperature", [1.0, 1.3])
def test_gradients_match_naive_autograd(temperature):
    logits, labels = _data(seed=1)
    gen = torch.Generator().manual_seed(2)
    w_lp, w_ent = torch.randn(labels.shape, generator=gen), torch.randn(labels.shape, generator=gen)
    x = logits.float().requires_grad_(True)
    lp, ent = F.logprobs_and_entropy(x, labels, chunk_size=4, temperature=temperature)
    (g,) = torch.autograd.grad((lp * w_lp).sum() + (ent * w_ent).sum(), x)
    y = logits.clone().requires_grad_(True)
    ref_lp, ref_ent = _naive(y, labels, temperature)
    (g_ref,) = torch.autograd.grad((ref_lp * w_lp.double()).sum() + (ref_ent * w_ent.double()).sum(), y)
    torch.testing.assert_close(g.double(), g_ref, atol=1e-5, rtol=1e-4)
    # one output alone (the other's gradient is absent)
    x2 = logits.float().requires_grad_(True)
    (g_ent,) = torch.autograd.grad(F.entropy_from_logits(x2, chunk_size=3).sum(), x2)
    y2 = logits.clone().requires_grad_(True)
    (g_ent_ref,) = torch.autograd.grad(_naive(y2, labels)[1].sum(), y2)
    torch.testing.assert_close(g_ent.double(), g_ent_ref, atol=1e-5, rtol=1e-4)


def test_gradcheck_float64():
    logits, labels = _data(shape=(4,), v=6, seed=3, scale=1.0)
    x = logits.clone().requires_grad_(True)

    def f(z):
        lp, ent = F.logprobs_and_entropy(z, labels, chunk_size=3, temperature=0.9)
        return lp, ent

    # the outputs are float32, so compare with float32-level tolerances
    assert torch.autograd.gradcheck(f, (x,), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_bf16_logits():
    logits, labels = _data(dtype=torch.bfloat16, seed=4)
    x = logits.clone().requires_grad_(True)
    lp, ent = F.logprobs_and_entropy(x, labels, chunk_size=7)
    ref_lp, ref_ent = _naive(logits.float(), labels)  # same bf16 inputs, computed in float64
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-5, rtol=1e-5)
    (g,) = torch.autograd.grad(lp.sum() + ent.sum(), x)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


def test_extreme_logits_are_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e30, 0.0, 0.0]])
    lp, ent = F.logprobs_and_entropy(logits, torch.tensor([1, 2]))
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(ent[1], torch.log(torch.tensor(2.0)))


def test_errors():
    logits, labels = _data()
    with pytest.raises(ValueError, match="temperature"):
        F.logprobs_and_entropy(logits, labels, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        F.logprobs_and_entropy(logits, labels, chunk_size=0)
    with pytest.raises(ValueError, match="labels"):
        F.logprobs_and_entropy(logits, labels[:, :-1])


@pytest.mark.parametrize("vocab,scale", [(65_536, 1.0), (65_536, 5.0), (151_936, 3.0)])
def test_large_vocabulary_matches_float64_to_1e_5(vocab, scale):
    """At a real vocabulary size the float32 entropy and gradients stay within 1e-5 (relative) of a float64
    log_softmax reference: the entropy's sum runs over terms of one sign."""
    g = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(12, vocab, generator=g) * scale).requires_grad_()
    labels = torch.randint(vocab, (12,), generator=g)
    up_lp, up_h = torch.randn(12, generator=g), torch.randn(12, generator=g)
    logp, ent = F.logprobs_and_entropy(logits, labels, chunk_size=5)
    (logp * up_lp + ent * up_h).sum().backward()
    ref = logits.detach().double().requires_grad_()
    logsm = torch.log_softmax(ref, dim=-1)
    ref_lp, ref_h = logsm.gather(-1, labels[:, None]).squeeze(-1), -(logsm.exp() * logsm).sum(-1)
    (ref_lp * up_lp.double() + ref_h * up_h.double()).sum().backward()
    for ours, theirs in ((logp, ref_lp), (ent, ref_h), (logits.grad, ref.grad)):
        err = (ours.detach().double() - theirs.detach()).abs().max() / theirs.detach().abs().max()
        assert err < 1e-5, float(err)
