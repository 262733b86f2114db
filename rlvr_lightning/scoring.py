"""Scoring rollouts with a model: the response tokens' log-probs and entropy, micro-batched.

Logits are divided by the batch's sampling temperature (``RolloutBatch.temperature``; 1.0 for greedy rollouts),
so the log-probs are those of the distribution the responses were sampled from. :func:`old_logprobs` gives the
PPO ratio's denominator: the log-probs under the weights that sampled a batch, also for a batch generated ahead of
training (``data.rollout_ahead``), which is scored while the trainer still holds those weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlvr_lightning import functional as F
from rlvr_lightning.data.types import RolloutBatch


def sequence_logprobs(
    model: nn.Module, batch: RolloutBatch, *, with_entropy: bool, grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Log-probs (and entropy, else None) of the response tokens under ``model``, each shape ``(B, T)``."""
    input_ids, attention_mask, position_ids = batch.model_inputs()
    T = batch.response_ids.shape[1]
    with torch.set_grad_enabled(grad):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=False, logits_to_keep=T + 1)
        logits = out.logits[:, -(T + 1):-1]
        temperature = batch.temperature or 1.0
        if with_entropy:
            return F.logprobs_and_entropy(logits, batch.response_ids, temperature=temperature)
        return F.logprobs_from_logits(logits, batch.response_ids, temperature=temperature), None


def micro_batches(index: Tensor, size: int | None) -> list[Tensor]:
    """``index`` (shape ``(n,)``) cut into chunks of ``size`` (None: one chunk)."""
    return list(index.split(size or len(index)))


@torch.no_grad()
def score_batch(
    model: nn.Module, batch: RolloutBatch, *, with_entropy: bool, micro_batch_size: int | None
) -> tuple[Tensor, Tensor | None]:
    """:func:`sequence_logprobs` of a whole batch without gradients, ``micro_batch_size`` sequences at a time, in
    eval mode (no dropout); the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    parts = [sequence_logprobs(model, batch.select(idx), with_entropy=with_entropy, grad=False)
             for idx in micro_batches(torch.arange(len(batch)), micro_batch_size)]
    model.train(was_training)
    logp = torch.cat([p[0] for p in parts])
    ent = torch.cat([p[1] for p in parts]) if with_entropy else None
    return logp, ent


def old_logprobs(
    model: nn.Module, batch: RolloutBatch, prefetched: list[RolloutBatch], micro_batch_size: int | None
) -> tuple[Tensor, Tensor]:
    """Log-probs and entropy of ``batch``'s response tokens under the weights that sampled it, each ``(B, T)``.

    Call it before the step's updates, with ``model`` holding the weights the engine last sampled from. Every
    batch of ``prefetched`` (generated ahead from exactly these weights) that has no ``old_logprobs`` yet gets them
    and its ``old_entropy`` now, on the CPU, and carries them until it is trained on. ``batch`` returns the ones it
    carries; an on-policy batch (``staleness`` 0) without them is scored now (:func:`score_batch`, eval mode).

    Args:
        model: the policy, its weights those of the last weight sync.
        batch: the batch about to be trained on (``response_ids`` shape ``(B, T)``).
        prefetched: the batches generated ahead at this step's pull (``RolloutSource.prefetched``).
        micro_batch_size: sequences per forward (None: all at once).

    Raises:
        ValueError: ``batch`` is stale but carries no log-probs (a trainer cannot recompute them: its weights moved).
    """
    device = next(model.parameters()).device
    for ahead in prefetched:
        if ahead.old_logprobs is None:
            logp, ent = score_batch(model, ahead.to(device), with_entropy=True, micro_batch_size=micro_batch_size)
            ahead.old_logprobs, ahead.old_entropy = logp.cpu(), ent.cpu()
    if batch.old_logprobs is not None and batch.old_entropy is not None:
        return batch.old_logprobs.to(device), batch.old_entropy.to(device)
    if batch.staleness:
        raise ValueError(
            f"a rollout batch with staleness {batch.staleness} carries no old_logprobs: the log-probs of the weights "
            "that sampled it are attached when it is generated (RolloutSource.prefetched); they cannot be "
            "recomputed after the weights moved"
        )
    logp, ent = score_batch(model, batch, with_entropy=True, micro_batch_size=micro_batch_size)
    return logp, ent  # type: ignore[return-value]
