"""entropy_probe against finite differences on a tiny random Qwen2 (float64)."""

from __future__ import annotations

import pytest
import torch

from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.entropy_probe import entropy_probe

B, TP, T, V = 6, 3, 4, 11


def tiny_policy(seed: int = 0) -> torch.nn.Module:
    """A random 2-layer GPT-2 in float64 (Qwen2's RMSNorm computes in float32, which would put a ~1e-7 floor
    under the finite differences)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=32, initializer_range=0.3,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                        eos_token_id=1)
    return GPT2LMHeadModel(config).double()


def rollout_batch(seed: int = 0) -> tuple[RolloutBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(B, TP, dtype=torch.bool)
    prompt_mask[0, 0] = False  # one left-padded prompt
    lengths = torch.tensor([4, 3, 4, 2, 4, 1])
    response_mask = torch.arange(T)[None] < lengths[:, None]
    batch = RolloutBatch(
        prompt_ids=torch.randint(2, V, (B, TP), generator=g) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=torch.randint(2, V, (B, T), generator=g) * response_mask,
        response_mask=response_mask,
        group_ids=torch.tensor([0, 0, 0, 1, 1, 1]),
        scores=torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
        truncated=torch.zeros(B, dtype=torch.bool),
    )
    adv = torch.tensor([0.7, -1.2, 0.5, -0.4, -0.6, 1.1], dtype=torch.float64)[:, None].expand(B, T).clone()
    return batch, adv * response_mask


def surrogate_gradient(policy, batch, adv, temperature=1.0):
    """grad of J = sum_t A_t log pi(y_t) / n, by plain autograd (the reference for the drives)."""
    ids, am, pos = batch.model_inputs()
    logits = policy(input_ids=ids, attention_mask=am, position_ids=pos).logits[:, -(T + 1):-1] / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, batch.response_ids[..., None])[..., 0]
    m = batch.response_mask
    j = (adv * logp * m).sum() / m.sum()
    return torch.autograd.grad(j, list(policy.parameters()))


def sgd_along(policy, grads, eta):
    def update():
        with torch.no_grad():
            for p, g in zip(policy.parameters(), grads):
                p.add_(eta * g)
    return update


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_prediction_matches_finite_difference_to_first_order(temperature):
    batch, adv = rollout_batch()
    errors = []
    for eta in (1e-3, 1e-4, 1e-5):
        policy = tiny_policy()
        grads = surrogate_gradient(policy, batch, adv, temperature)
        out = entropy_probe(policy, batch, adv, sgd_along(policy, grads, eta), temperature=temperature)
        # a plain SGD step along grad J: the prediction is eta * (drive_pos + drive_neg) exactly
        torch.testing.assert_close(out["entropy_change_predicted"],
                                   eta * (out["entropy_drive_pos"] + out["entropy_drive_neg"]),
                                   rtol=1e-9, atol=0.0)
        measured, predicted = out["entropy_change_measured"], out["entropy_change_predicted"]
        assert predicted.abs() > 0
        errors.append(float((measured - predicted).abs() / predicted.abs()))
    # the remainder is second order: the relative error shrinks about tenfold per tenfold smaller step
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5, errors
    assert errors[2] < 1e-3, errors


def test_drives_split_the_full_gradient_by_the_sign_of_the_advantage():
    batch, adv = rollout_batch()
    policy = tiny_policy()
    full = surrogate_gradient(policy, batch, adv)
    pos = surrogate_gradient(policy, batch, adv.clamp(min=0))
    out = entropy_probe(policy, batch, adv, lambda: None)
    # drive_pos + drive_neg = grad H . grad J, and drive_pos = grad H . grad J_pos (reference by autograd)
    ids, am, position = batch.model_inputs()
    logits = policy(input_ids=ids, attention_mask=am, position_ids=position).logits[:, -(T + 1):-1]
    logp = torch.log_softmax(logits, -1)
    m = batch.response_mask
    h = (-(logp.exp() * logp).sum(-1) * m).sum() / m.sum()
    g_h = torch.autograd.grad(h, list(policy.parameters()))
    dot = lambda xs, ys: sum((x * y).sum() for x, y in zip(xs, ys))  # noqa: E731
    torch.testing.assert_close(out["entropy_drive_pos"] + out["entropy_drive_neg"], dot(g_h, full))
    torch.testing.assert_close(out["entropy_drive_pos"], dot(g_h, pos))
    torch.testing.assert_close(out["entropy_before"], h.detach())
    # no update: nothing changes
    assert out["entropy_change_measured"] == 0 and out["entropy_change_predicted"] == 0
    assert out["update_norm"] == 0


def test_only_positive_advantages_leave_no_negative_drive():
    batch, adv = rollout_batch()
    out = entropy_probe(tiny_policy(), batch, adv.abs(), lambda: None)
    assert out["entropy_drive_neg"] == 0 and out["entropy_drive_pos"] != 0


def test_tensor_tuple_input_equals_rollout_batch_input():
    batch, adv = rollout_batch()
    policy = tiny_policy()
    grads = surrogate_gradient(policy, batch, adv)
    a = entropy_probe(policy, batch, adv, sgd_along(policy, grads, 1e-2))
    policy = tiny_policy()
    tensors = (*batch.model_inputs(), batch.response_ids, batch.response_mask)
    b = entropy_probe(policy, tensors, adv, sgd_along(policy, grads, 1e-2))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_an_adam_step_is_predicted_to_first_order():
    batch, adv = rollout_batch()
    errors = []
    for lr in (1e-4, 1e-5):
        policy = tiny_policy()
        opt = torch.optim.Adam(policy.parameters(), lr=lr)

        def update():
            opt.zero_grad()
            grads = surrogate_gradient(policy, batch, adv)
            for p, g in zip(policy.parameters(), grads):
                p.grad = -g
            opt.step()

        out = entropy_probe(policy, batch, adv, update)
        errors.append(float((out["entropy_change_measured"] - out["entropy_change_predicted"]).abs()
                            / out["entropy_change_predicted"].abs()))
    assert errors[1] < errors[0] / 5, errors
