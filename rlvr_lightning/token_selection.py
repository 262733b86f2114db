"""Token selections over a whole mini-batch (Clip-Cov, KL-Cov), made once before each update's micro-batch loop.

A reweighting with ``selects_tokens`` picks a fraction of the mini-batch's valid tokens by their covariance score
``(A - mean A)(logp - mean logp)``. Made inside each micro-batch (or each GPU, as verl does), the means, the number
of tokens selected and the ranking would all change with how the mini-batch is split. Instead, before the
micro-batch loop of every update, each rank:

1. takes the current policy's log-probs of its share of the mini-batch: ``old_logp`` while the weights are those
   that scored the rollout batch (the first update of a rollout batch: no extra cost), else one extra forward
   without gradients over the mini-batch (micro-batched, in eval mode: about a third of the update's own
   forward and backward);
2. all-gathers ``(logp, A, old_logp)`` of its valid tokens with their keys ``(sequence index over all ranks,
   position)``: one all-gather of the counts and two of about ``3 * N / W`` floats and ``N / W`` integers, for N
   valid tokens in the mini-batch over W ranks;
3. orders the gathered tokens by key and calls ``reweight.select`` on them as one flat batch of N tokens, the same
   computation on every rank (Clip-Cov's draw is seeded by ``(seed, step)`` alone);
4. keeps its own tokens' part as a ``(B, T)`` mask that the micro-batches index (``ctx.selection``).

The selection so does not depend on the micro-batch size, the number of ranks or the order of the mini-batch's
sequences. Shapes: B sequences of the rollout batch on this rank, T response tokens, n valid tokens of this rank's
share of the mini-batch, N over all ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rlvr_lightning.components.base import Reweight, ReweightContext
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.scoring import Scoring

__all__ = ["mini_batch_selection", "select_tokens"]

AllGather = Callable[[Tensor], Tensor]
"""Gathers a tensor of the same shape from every rank: ``x -> (W, *x.shape)``, in rank order."""

_POSITIONS = 1 << 32  # token key = sequence index * _POSITIONS + position


def mini_batch_selection(
    reweight: Reweight, policy: nn.Module, batch: RolloutBatch, mb: Tensor, old_logp: Tensor, advantages: Tensor,
    *, fresh: bool, scoring: Scoring, all_gather: AllGather | None, rank: int, context: dict[str, Any],
) -> Tensor | None:
    """The tokens ``reweight`` selects over the whole mini-batch, this rank's part; None if it selects none.

    Args:
        reweight: the loss's reweighting (nothing to do unless ``reweight.selects_tokens``).
        policy: the trained model (scores the mini-batch when the weights moved since ``old_logp``).
        batch: this rank's rollout batch of B sequences.
        mb: this rank's mini-batch, indices into ``batch``, shape ``(b,)``.
        old_logp: log-probs under the sampling policy, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        fresh: the policy still has the weights that computed ``old_logp`` (no update since).
        scoring: how the extra scoring pass runs (:meth:`Scoring.score`: logits path, micro-batches).
        all_gather: gathers over data-parallel ranks (None: one rank).
        rank: this rank's index among the W data-parallel ranks (every rank holds B sequences).
        context: the update's step context (``step``, ``total_steps``, ``epoch`` ...), for the reweighting.

    Returns:
        Bool selection, shape ``(B, T)``, False outside ``mb``.
    """
    if not reweight.selects_tokens:
        return None
    if fresh:
        logp = old_logp[mb]
    else:
        logp = scoring.score(policy, batch.select(mb))[0]
    sel = select_tokens(reweight, logp, advantages[mb], batch.response_mask[mb], old_logp[mb],
                        mb + rank * len(batch), all_gather=all_gather, rank=rank, context=context)
    out = torch.zeros_like(batch.response_mask, dtype=torch.bool)
    out[mb] = sel
    return out


def select_tokens(
    reweight: Reweight, logp: Tensor, advantages: Tensor, mask: Tensor, old_logp: Tensor, seq_ids: Tensor, *,
    all_gather: AllGather | None = None, rank: int = 0, context: dict[str, Any] | None = None,
) -> Tensor:
    """``reweight.select`` over the valid tokens of every rank at once, ordered by (sequence, position); this rank's
    part.

    Args:
        reweight: a reweighting with ``selects_tokens``.
        logp: current log-probs of this rank's sequences, shape ``(b, T)``.
        advantages: per-token advantages, shape ``(b, T)``.
        mask: True on real response tokens, shape ``(b, T)``.
        old_logp: sampling-policy log-probs, shape ``(b, T)``.
        seq_ids: each sequence's index over all ranks (the same sequence has the same index however the batch is
            split), shape ``(b,)``.
        all_gather: gathers over ranks (None: one rank).
        rank: this rank's index.
        context: step context passed to the reweighting (``step``, ``total_steps`` ...).

    Returns:
        Bool selection, shape ``(b, T)``. The reweighting sees one row of the N gathered tokens, all valid, with
        ``entropy = -logp`` (the sampled token's surprisal: the entropy is not computed for the selection) and
        ``sample_key = 0``.
    """
    valid = mask.bool()
    keys = (seq_ids.to(torch.long)[:, None] * _POSITIONS + torch.arange(mask.shape[1], device=mask.device))[valid]
    values = torch.stack([logp[valid], advantages[valid], old_logp[valid]], dim=-1).float()  # (n, 3)
    start = 0
    if all_gather is not None:
        values, keys, start = _gather_rows(values, keys, all_gather, rank)
    order = torch.argsort(keys)
    lp, adv, old = values[order].T[:, None]  # each (1, N)
    every = torch.ones_like(lp, dtype=torch.bool)
    ctx = ReweightContext(advantages=adv, logp=lp, old_logp=old, entropy=-lp, mask=every, **(context or {}),
                          sample_key=0)
    chosen = torch.zeros(len(keys), dtype=torch.bool, device=mask.device)
    if len(keys):
        chosen[order] = reweight.select(ctx)[0]
    out = torch.zeros_like(valid)
    out[valid] = chosen[start : start + int(valid.sum())]
    return out


def _gather_rows(values: Tensor, keys: Tensor, all_gather: AllGather, rank: int) -> tuple[Tensor, Tensor, int]:
    """Every rank's rows of ``values`` ``(n, 3)`` and ``keys`` ``(n,)``, concatenated in rank order, and where this
    rank's rows start (ranks may hold different numbers of rows: they are padded for the gather)."""
    counts = all_gather(torch.tensor([len(keys)], device=keys.device)).reshape(-1).tolist()
    width = max(counts)
    pad = width - len(keys)
    all_values = all_gather(torch.cat([values, values.new_zeros(pad, values.shape[1])]))
    all_keys = all_gather(torch.cat([keys, keys.new_zeros(pad)]))
    values = torch.cat([all_values[r, :c] for r, c in enumerate(counts)])
    keys = torch.cat([all_keys[r, :c] for r, c in enumerate(counts)])
    return values, keys, sum(counts[:rank])
