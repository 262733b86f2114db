"""Which tokens drive the entropy: the exact split of GRPO's expected gradient by the sign of the advantage.

With binary rewards and group-relative advantages (rewards minus the group mean, optionally divided by the group's
standard deviation), the expected gradient of the positive-advantage part of the surrogate and that of the
negative-advantage part are parallel, both along grad p (p: the prompt's success probability under the policy),
and their ratio is exactly (1 - p) / p:

    E[grad J_pos] = E[S] grad p / p,   E[grad J_neg] = E[S] grad p / (1 - p),

with S the sum of the positive advantages of a group (equal to minus the sum of the negative ones). Proof: given
the group's rewards, each response is drawn from the policy conditioned on its own reward, so
E[grad log pi(y) | R(y) = 1] = grad p / p and E[grad log pi(y) | R(y) = 0] = -grad p / (1 - p).

So any first-order effect of the two halves, the entropy drive included, splits as (1 - p) : p. Positive-advantage
tokens carry most of it on prompts solved less than half the time (the paper's regime), negative-advantage tokens
on prompts solved more than half the time. The tests check this by exact enumeration of every group outcome of a
small sequence policy (float64), through the library's GRPO advantages; docs/entropy-theory.md states what follows.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from rlvr_lightning.functional import grpo_advantages

K, T, G = 3, 2, 3  # vocabulary, sequence length, group size: 9 sequences, 729 group outcomes


def _policy(theta: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of all K**T sequences of a small autoregressive policy, shape ``(K**T,)``.

    ``theta`` (shape ``(K + K * K + 4,)``): first-token logits, second-token logits per first token, and four
    parameters shared through a nonlinearity, so that the parameterization is not tabular.
    """
    first = theta[:K] + torch.tanh(theta[-4:-1]).sum() * torch.arange(K, dtype=theta.dtype)
    second = theta[K:K + K * K].reshape(K, K) * torch.exp(0.3 * theta[-1])
    lp1 = torch.log_softmax(first, -1)
    lp2 = torch.log_softmax(second, -1)
    return (lp1[:, None] + lp2).reshape(-1)


def _sequence_entropy_grad(theta: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean per-token entropy along the policy's own distribution, shape ``theta.shape``."""
    theta = theta.detach().requires_grad_(True)
    first = theta[:K] + torch.tanh(theta[-4:-1]).sum() * torch.arange(K, dtype=theta.dtype)
    second = theta[K:K + K * K].reshape(K, K) * torch.exp(0.3 * theta[-1])
    p1 = torch.softmax(first, -1)
    h1 = -(p1 * torch.log(p1)).sum()
    p2 = torch.softmax(second, -1)
    h2 = (p1 * -(p2 * torch.log(p2)).sum(-1)).sum()
    (grad,) = torch.autograd.grad((h1 + h2) / 2, theta)
    return grad


def _expected_halves(theta: torch.Tensor, reward: torch.Tensor, scale_by_std: bool):
    """Exact E[grad J_pos], E[grad J_neg] over all groups of G sampled sequences, and p with grad p."""
    theta = theta.detach().requires_grad_(True)
    logp = _policy(theta)
    n = logp.numel()
    grads = torch.stack([torch.autograd.grad(logp[i], theta, retain_graph=True)[0] for i in range(n)])
    probs = logp.detach().exp()
    pos = torch.zeros_like(theta)
    neg = torch.zeros_like(theta)
    for group in itertools.product(range(n), repeat=G):
        idx = torch.tensor(group)
        prob = probs[idx].prod()
        adv = grpo_advantages(reward[idx], torch.zeros(G, dtype=torch.long), scale_by_std=scale_by_std)
        pos += prob * (adv.clamp(min=0)[:, None] * grads[idx]).sum(0)
        neg += prob * (adv.clamp(max=0)[:, None] * grads[idx]).sum(0)
    p = (probs * reward).sum()
    (grad_p,) = torch.autograd.grad((logp.exp() * reward).sum(), theta)
    return pos, neg, p, grad_p


@pytest.mark.parametrize("scale_by_std", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_and_negative_halves_are_parallel_with_ratio_one_minus_p_over_p(seed, scale_by_std):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(K + K * K + 4, generator=gen, dtype=torch.float64)
    reward = (torch.rand(K ** T, generator=gen) < 0.4).to(torch.float64)
    reward[0], reward[-1] = 1.0, 0.0  # both outcomes possible
    pos, neg, p, grad_p = _expected_halves(theta, reward, scale_by_std)
    assert 0.0 < p < 1.0
    torch.testing.assert_close(pos, (1 - p) / p * neg, rtol=1e-10, atol=1e-12)
    # both lie along grad p (cosine 1), and a first-order entropy drive splits in the same ratio
    cos = torch.nn.functional.cosine_similarity(pos, grad_p, dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-10)
    grad_h = _sequence_entropy_grad(theta)
    drive_pos, drive_neg = grad_h @ pos, grad_h @ neg
    assert drive_pos.item() == pytest.approx(((1 - p) / p * drive_neg).item(), rel=1e-9)


def test_single_samples_are_not_parallel():
    """The identity holds in expectation only: one group's halves point in different directions, which is why
    the probe's per-batch drives are noisy and are averaged over probes and seeds."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(K + K * K + 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    logp = _policy(theta)
    reward = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    idx = torch.tensor([0, 1, 4])
    adv = grpo_advantages(reward[idx], torch.zeros(G, dtype=torch.long))
    (pos,) = torch.autograd.grad((adv.clamp(min=0) * logp[idx]).sum(), theta, retain_graph=True)
    (neg,) = torch.autograd.grad((adv.clamp(max=0) * logp[idx]).sum(), theta)
    cos = torch.nn.functional.cosine_similarity(pos, neg, dim=0).item()
    assert abs(cos) < 0.99
