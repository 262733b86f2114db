"""A live probe of entropy dynamics: what one training step does to the policy's entropy on its own rollouts.

For one rollout batch, with theta the parameters before the step's updates and theta' after them:

* ``entropy_change_measured`` = H(theta') - H(theta), with H the mean token entropy of the sampling distribution
  (logits / temperature) over the batch's response tokens, teacher-forced on the batch's responses;
* ``entropy_change_predicted`` = grad_theta H(theta) . (theta' - theta): the first-order prediction from the
  actual parameter step, whatever the optimizer (AdamW, clipping, several mini-batches);
* ``entropy_drive_pos`` / ``entropy_drive_neg`` = grad_theta H . grad_theta J_pos and grad_theta H . grad_theta J_neg
  at theta, where J = sum_t A_t log pi(y_t) / n is the token-mean policy-gradient surrogate (its gradient is the
  negative gradient of the token-mean loss at ratio 1) and J_pos, J_neg keep its tokens with A > 0, A < 0
  (J = J_pos + J_neg, n the number of response tokens of the batch). A plain SGD step of size eta along grad J
  would change the entropy by eta * (drive_pos + drive_neg) to first order: a negative drive means that sign's
  tokens push entropy down.

The gap between measured and predicted is the beyond-first-order part; the gap between the predicted change and
eta * (drive_pos + drive_neg) is what the optimizer's geometry (normalization, momentum, clipping, off-policy
mini-batches) adds to the plain gradient.

Overhead per probed step: one extra forward with gradients and three backward passes through it (for grad H,
grad J_pos, grad J_neg; the graph is kept between them), one extra forward without gradients after the update,
and one copy of the trainable parameters (memory: the parameters twice more, for theta and grad H, plus one
gradient buffer at a time). The step's own updates run unchanged inside ``update``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn


def _response_logits(policy: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                     num_response: int, temperature: float) -> Tensor:
    """Logits that predict the response tokens, divided by ``temperature``, shape ``(B, T, V)``, float32 or wider."""
    out = policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    logits = out.logits[:, -(num_response + 1):-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits / temperature


def _token_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of softmax(logits) per position, shape ``logits.shape[:-1]``."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _dot(xs: list[Tensor | None], ys: list[Tensor | None]) -> Tensor:
    """Sum of the elementwise products of two lists of tensors (None: zero)."""
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(xs, ys):
        if x is not None and y is not None:
            total = total + (x.double() * y.double()).sum().cpu()
    return total


def entropy_probe(
    policy: nn.Module,
    batch: Any,
    advantages: Tensor,
    update: Callable[[], Any],
    *,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """Run ``update`` (the step's parameter updates) and measure and predict its effect on the token entropy.

    Args:
        policy: a Hugging Face causal LM (called with ``input_ids``, ``attention_mask``, ``position_ids``).
        batch: the rollout batch: a :class:`rlvr_lightning.data.types.RolloutBatch` (anything with
            ``model_inputs()``, ``response_ids`` and ``response_mask``), or a tuple ``(input_ids, attention_mask,
            position_ids, response_ids, response_mask)`` of prompt + response tensors of shape ``(B, L)`` and
            response tensors of shape ``(B, T)`` (responses right-aligned at the end of ``input_ids``, i.e. the
            last ``T`` columns; the mask is bool, True on real response tokens).
        advantages: per-token advantages, shape ``(B, T)`` (values off the mask are ignored).
        update: performs the step's updates to ``policy``'s parameters in place (e.g. the optimizer steps of the
            step's mini-batches); its return value is ignored.
        temperature: the sampling temperature: entropy and log-probs are those of softmax(logits / temperature).

    Returns:
        Detached float64 scalars: ``entropy_before``, ``entropy_after``, ``entropy_change_measured``,
        ``entropy_change_predicted``, ``entropy_drive_pos``, ``entropy_drive_neg``, and ``update_norm``
        (the L2 norm of theta' - theta).
    """
    if hasattr(batch, "model_inputs"):
        input_ids, attention_mask, position_ids = batch.model_inputs()
        response_ids, mask = batch.response_ids, batch.response_mask
    else:
        input_ids, attention_mask, position_ids, response_ids, mask = batch
    mask = mask.bool()
    T = response_ids.shape[1]
    n = mask.sum().clamp(min=1)
    params = [p for p in policy.parameters() if p.requires_grad]

    with torch.enable_grad():
        logits = _response_logits(policy, input_ids, attention_mask, position_ids, T, temperature)
        entropy = (_token_entropy(logits) * mask).sum() / n
        logp = torch.log_softmax(logits, dim=-1).gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        weighted = advantages.to(logp.dtype) * logp
        j_pos = (weighted * (mask & (advantages > 0))).sum() / n
        j_neg = (weighted * (mask & (advantages < 0))).sum() / n
        g_h = torch.autograd.grad(entropy, params, retain_graph=True, allow_unused=True)
        g_pos = torch.autograd.grad(j_pos, params, retain_graph=True, allow_unused=True)
        drive_pos = _dot(list(g_h), list(g_pos))
        del g_pos
        g_neg = torch.autograd.grad(j_neg, params, allow_unused=True)
        drive_neg = _dot(list(g_h), list(g_neg))
        del g_neg, logits, logp, weighted
    before = [p.detach().clone() for p in params]
    entropy_before = entropy.detach().double().cpu()

    update()

    with torch.no_grad():
        delta = [p.detach() - b for p, b in zip(params, before)]
        predicted = _dot(list(g_h), delta)
        update_norm = _dot(delta, delta).sqrt()
        del before, delta
        logits = _response_logits(policy, input_ids, attention_mask, position_ids, T, temperature)
        entropy_after = ((_token_entropy(logits) * mask).sum() / n).double().cpu()
    return {
        "entropy_before": entropy_before,
        "entropy_after": entropy_after,
        "entropy_change_measured": entropy_after - entropy_before,
        "entropy_change_predicted": predicted,
        "entropy_drive_pos": drive_pos,
        "entropy_drive_neg": drive_neg,
        "update_norm": update_norm,
    }


PROBE_KEYS = ("entropy_change_measured", "entropy_change_predicted", "entropy_drive_pos", "entropy_drive_neg")
"""The values ``RLVRModule`` logs as ``train/<key>`` on a probed step."""


def probed_updates(
    policy: nn.Module, batch: Any, advantages: Tensor, updates: Callable[[], list[Any]], *, every: int, step: int,
) -> tuple[list[Any], dict[str, Tensor]]:
    """Run the step's ``updates`` (returning their statistics); every ``every``-th rollout step (0: never) inside
    :func:`entropy_probe`, whose values come back as ``{"train/<key>": float32 scalar}`` for :data:`PROBE_KEYS`
    (NaN on the other steps, which readers such as ``rlvr plot`` skip).

    Args:
        policy: the trained causal LM (one process: under data parallelism each rank would probe its own shard).
        batch: the step's :class:`~rlvr_lightning.data.types.RolloutBatch` (its ``temperature`` is used).
        advantages: per-token advantages, shape ``(B, T)``.
        updates: the step's optimizer updates.
        every: probe every this many rollout steps; 0 never.
        step: the rollout step (0-based) about to be trained.
    """
    if not every:
        return updates(), {}
    if step % every:  # NaN, not a missing value: a logger would repeat the last probe's value in this row
        return updates(), {f"train/{key}": torch.tensor(float("nan")) for key in PROBE_KEYS}
    results: list[Any] = []
    probe = entropy_probe(policy, batch, advantages, lambda: results.extend(updates()),
                          temperature=batch.temperature or 1.0)
    return results, {f"train/{key}": probe[key].float() for key in PROBE_KEYS}


__all__ = ["PROBE_KEYS", "entropy_probe", "probed_updates"]
