"""Scoring rollouts with a model: the response tokens' log-probs and entropy, micro-batched.

Two paths give the same numbers (to float32 rounding): ``"hidden"`` (the default) takes the model's final hidden
states and its output embedding through :func:`rlvr_lightning.fused_head.head_logprobs`, so the ``(tokens, V)``
logits are never built; ``"full"`` builds them and reduces them chunk by chunk
(:func:`rlvr_lightning.functional.logprobs_and_entropy`). A model the hidden path does not apply to (its head is no
``nn.Linear``, or it transforms the head's output) is scored through full logits. Logits are divided by the batch's
sampling temperature (``RolloutBatch.temperature``; 1.0 for greedy rollouts), so the log-probs are those of the
distribution the responses were sampled from. Each micro-batch is cut to its own longest prompt and response
before the forward, so sorting sequences by length (``micro_batch_tokens``) saves the padding's compute.
:func:`old_logprobs` gives the PPO ratio's denominator: the log-probs under the weights that sampled a batch, also
for a batch generated ahead of training (``data.rollout_ahead``), which is scored while the trainer still holds
those weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from rlvr_lightning import functional as F
from rlvr_lightning.batching import micro_batches, split_to
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.fused_head import head_logprobs, hidden_path_unsupported
from rlvr_lightning.models import cache_argument, fsdp_sharded

LOGITS_PATHS = ("hidden", "full")


def trimmed(batch: RolloutBatch) -> RolloutBatch:
    """``batch`` without the columns that are padding in every row: the prompts' left, the responses' right (at
    least one response column stays)."""
    real = batch.prompt_mask.any(0)
    first = int(real.float().argmax()) if bool(real.any()) else batch.prompt_mask.shape[1]
    width = max(1, int(batch.response_mask.sum(1).max())) if len(batch) else 1
    if first == 0 and width == batch.response_ids.shape[1]:
        return batch
    kw = dict(prompt_ids=batch.prompt_ids[:, first:], prompt_mask=batch.prompt_mask[:, first:],
              response_ids=batch.response_ids[:, :width], response_mask=batch.response_mask[:, :width])
    if batch.rollout_logprobs is not None:
        kw["rollout_logprobs"] = batch.rollout_logprobs[:, :width]
    return replace(batch, **kw)


def prefix_cache(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, width: int
                 ) -> dict[str, Any] | None:
    """``{name: cache}`` (the forward's keyword, :func:`cache_argument`): the KV cache of every row's first ``width``
    columns, computed once per distinct prefix and indexed out to the rows (differentiably: each prefix gets the
    sum of its rows' gradients); None when no two rows share their prefix, ``width < 1``, or the model gives no
    cache with ``batch_select_indices`` (or checkpoints activations in train mode, which turns the cache off), or
    is sharded by FSDP2 and gradients are on: the prefix forward's layers reach the loss only through the cache,
    which FSDP2's pre-backward hooks do not see, so their parameters would still be sharded in the backward. The
    inputs have shape ``(B, L)``; a row's prefix is its ids and mask."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5 (older: the other name)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if width < 1 or (model.training and checkpointing) or (torch.is_grad_enabled() and fsdp_sharded(model)):
        return None
    prefix = torch.cat([input_ids[:, :width], attention_mask[:, :width].long()], dim=1)
    distinct, rows = torch.unique(prefix, dim=0, return_inverse=True)
    if len(distinct) == len(prefix):
        return None
    n = len(prefix)
    first = torch.full((len(distinct),), n, device=prefix.device).scatter_reduce_(
        0, rows, torch.arange(n, device=prefix.device), "amin")  # each distinct prefix's first row
    out = model(input_ids=input_ids[first, :width], attention_mask=attention_mask[first, :width],
                position_ids=position_ids[first, :width], use_cache=True, logits_to_keep=1)
    key = cache_argument(model)
    cache = out[key] if key in out else None
    if not hasattr(cache, "batch_select_indices"):
        return None
    cache.batch_select_indices(rows)
    return {key: cache}


def _forward(model: nn.Module, part: RolloutBatch, temperature: float, logits_path: str, share_prefix: bool
             ) -> tuple[Tensor, Tensor]:
    """Log-probs and entropy of ``part``'s response tokens (shape ``(B, T)``): the model's forward over prompt +
    response, or, with ``share_prefix``, over each distinct prompt but its last token once (:func:`prefix_cache`)
    and then over the last prompt token and the response of every row."""
    input_ids, attention_mask, position_ids = part.model_inputs()
    labels = part.response_ids
    keep = labels.shape[1] + 1  # the last prompt token predicts the first response token

    def inputs() -> dict[str, Any]:
        cache = prefix_cache(model, input_ids, attention_mask, position_ids, input_ids.shape[1] - keep) \
            if share_prefix else None
        if cache is None:
            return dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=False)
        return dict(input_ids=input_ids[:, -keep:], attention_mask=attention_mask,
                    position_ids=position_ids[:, -keep:], use_cache=True, **cache)

    if logits_path == "hidden" and hidden_path_unsupported(model) is None:  # (a known fall-back skips the try)
        out = head_logprobs(model, labels=labels, temperature=temperature, **inputs())
        if out is not None:
            return out
    logits = model(**inputs(), logits_to_keep=keep).logits[:, -keep:-1]  # a fresh cache: forwards append to theirs
    return F.logprobs_and_entropy(logits, labels, temperature=temperature)


def sequence_logprobs(
    model: nn.Module, batch: RolloutBatch, *, grad: bool, with_entropy: bool = True, logits_path: str = "hidden",
    check: bool = False, share_prefix: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs and entropy (else None) of the response tokens under ``model``, each shape ``(B, T)`` (0 on the
    padding beyond the batch's longest response).

    Args:
        model: a Hugging Face causal LM.
        batch: the sequences to score.
        grad: build the autograd graph.
        with_entropy: return the entropy too (both paths compute it anyway).
        logits_path: ``"hidden"`` (from hidden states, no logits; full logits where it does not apply) or ``"full"``.
        check: raise ``ValueError`` unless every log-prob is <= 0 and every entropy within ``[0, log V]`` on the
            response tokens (:func:`rlvr_lightning.functional.check_logprobs_and_entropy`; syncs the host).
        share_prefix: run each distinct prompt (but its last token) through the model once for all the rows that
            share it (a group's G responses) and reuse its KV cache: the same numbers (to float rounding) with
            ``(G - 1) / G`` of the prompt tokens' compute saved (:func:`prefix_cache`).
    """
    T = batch.response_ids.shape[1]
    part = trimmed(batch)
    with torch.set_grad_enabled(grad):
        out = _forward(model, part, batch.temperature or 1.0, logits_path, share_prefix)
        logp, entropy = (nn.functional.pad(x, (0, T - part.response_ids.shape[1])) for x in out)
    if check:
        F.check_logprobs_and_entropy(logp, entropy, vocab_size=_vocab_size(model), mask=batch.response_mask)
    return logp, entropy if with_entropy else None


def _vocab_size(model: nn.Module) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.out_features) if isinstance(head, nn.Linear) else int(model.config.vocab_size)


@dataclass(frozen=True)
class Scoring:
    """How the module scores rollouts: the logits path, the guard and the micro-batching of forwards.

    Attributes:
        logits_path: ``"hidden"`` or ``"full"`` (:func:`sequence_logprobs`).
        check: check log-probs and entropies on every forward (:func:`sequence_logprobs`).
        micro_batch_size: most sequences per forward (None: no limit).
        micro_batch_tokens: most padded tokens per forward, sequences sorted by length (None: cut by
            ``micro_batch_size`` alone, in order; :func:`rlvr_lightning.batching.micro_batches`).
        max_over_ranks: the largest of an integer over all ranks (None: one process); with
            ``micro_batch_tokens`` every rank then cuts as many micro-batches as the rank that needs the most.
        share_prefix: compute each distinct prompt's prefix once per forward (:func:`sequence_logprobs`).
    """

    logits_path: str = "hidden"
    check: bool = False
    micro_batch_size: int | None = None
    micro_batch_tokens: int | None = None
    max_over_ranks: Callable[[int], int] | None = None
    share_prefix: bool = False

    def __post_init__(self) -> None:
        if self.logits_path not in LOGITS_PATHS:
            raise ValueError(f"model.logits_path must be one of {list(LOGITS_PATHS)}, got {self.logits_path!r}")

    def micro_batches(self, batch: RolloutBatch, index: Tensor) -> list[Tensor]:
        """The micro-batches (index tensors into ``batch``) of the sequences ``index``, shape ``(n,)``."""
        if self.micro_batch_tokens is None:
            return micro_batches(index, self.micro_batch_size)
        groups = micro_batches(index, self.micro_batch_size, tokens=self.micro_batch_tokens,
                               prompt_lengths=batch.prompt_mask.sum(1), response_lengths=batch.response_mask.sum(1))
        return groups if self.max_over_ranks is None else split_to(groups, self.max_over_ranks(len(groups)))

    def logprobs(self, model: nn.Module, batch: RolloutBatch, *, grad: bool) -> tuple[Tensor, Tensor]:
        """:func:`sequence_logprobs` of ``batch`` in one forward, shape ``(B, T)`` each."""
        return sequence_logprobs(model, batch, grad=grad, logits_path=self.logits_path, check=self.check,
                                 share_prefix=self.share_prefix)

    @torch.no_grad()
    def score(self, model: nn.Module, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        """Log-probs and entropy of a whole batch without gradients, micro-batch by micro-batch, in eval mode (no
        dropout; the model's mode is restored afterwards); each shape ``(B, T)``."""
        was_training = model.training
        model.eval()
        groups = self.micro_batches(batch, torch.arange(len(batch)))
        parts = [self.logprobs(model, batch.select(idx), grad=False) for idx in groups]
        model.train(was_training)
        order = torch.cat(groups).argsort().to(batch.response_ids.device)  # back to the batch's order
        return torch.cat([p[0] for p in parts])[order], torch.cat([p[1] for p in parts])[order]


def old_logprobs(
    scoring: Scoring, model: nn.Module, batch: RolloutBatch, prefetched: list[RolloutBatch], *, defer: bool = False
) -> tuple[Tensor, Tensor] | None:
    """Log-probs and entropy of ``batch``'s response tokens under the weights that sampled it, each ``(B, T)``.

    Call it before the step's updates, with ``model`` holding the weights the engine last sampled from. Every
    batch of ``prefetched`` (generated ahead from exactly these weights) that has no ``old_logprobs`` yet gets them
    and its ``old_entropy`` now, on the CPU, and carries them until it is trained on. ``batch`` returns the ones it
    carries; an on-policy batch (``staleness`` 0) without them is scored now (:meth:`Scoring.score`, eval mode),
    or, with ``defer``, left to the caller (None): its single update's forward gives them.

    Args:
        scoring: how to score (:meth:`Scoring.score`: the logits path, micro-batches).
        model: the policy, its weights those of the last weight sync.
        batch: the batch about to be trained on (``response_ids`` shape ``(B, T)``).
        prefetched: the batches generated ahead at this step's pull (``RolloutSource.prefetched``).
        defer: return None instead of scoring an on-policy batch that carries no log-probs.

    Raises:
        ValueError: ``batch`` is stale but carries no log-probs (a trainer cannot recompute them: its weights moved).
    """
    device = next(model.parameters()).device
    for ahead in prefetched:
        if ahead.old_logprobs is None:
            logp, ent = scoring.score(model, ahead.to(device))
            ahead.old_logprobs, ahead.old_entropy = logp.cpu(), ent.cpu()
    if batch.old_logprobs is not None and batch.old_entropy is not None:
        return batch.old_logprobs.to(device), batch.old_entropy.to(device)
    if batch.staleness:
        raise ValueError(
            f"a rollout batch with staleness {batch.staleness} carries no old_logprobs: the log-probs of the weights "
            "that sampled it are attached when it is generated (RolloutSource.prefetched); they cannot be "
            "recomputed after the weights moved"
        )
    return None if defer else scoring.score(model, batch)


__all__ = ["LOGITS_PATHS", "Scoring", "old_logprobs", "sequence_logprobs", "trimmed"]
