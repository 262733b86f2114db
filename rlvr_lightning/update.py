"""One optimizer step's gradient, accumulated over micro-batches, and where the old policy's log-probs come from.

The old log-probs (and entropies) of a rollout batch are those of the policy that sampled it. With several updates
per batch they must be scored before the first update (a forward without gradients). With exactly one update
(``ppo_epochs * num_mini_batches == 1``) of an on-policy batch, no dropout and no token selection that needs them
before the update (``RLVRModule._fusable``), the policy of that update's forward *is* the sampling policy, so
:class:`OldScores` takes them from the update's own forward, detached: one forward fewer per step and the same
losses and gradients (the ratio is exactly 1 instead of 1 up to float rounding between two forwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from rlvr_lightning.components import Loss
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.scoring import Scoring


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` drops anything in train mode: an ``nn.Dropout`` with ``p > 0`` or a config value named
    ``*dropout*`` / ``*pdrop*`` above 0 (Hugging Face attention dropout is functional, not a module)."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    values = config.to_dict().items() if hasattr(config, "to_dict") else ()
    return any(("dropout" in k or "pdrop" in k) and isinstance(v, (int, float)) and v > 0 for k, v in values)


@dataclass
class OldScores:
    """The sampling policy's log-probs and entropies of a rollout batch, each shape ``(B, T)``.

    Attributes:
        logp: old log-probs, shape ``(B, T)``.
        entropy: old token entropies, shape ``(B, T)``.
        from_update: True when they are filled by the (single) update's forwards (:meth:`take`), False when they
            were scored before the updates.
    """

    logp: Tensor
    entropy: Tensor
    from_update: bool = False

    @classmethod
    def from_forward(cls, mask: Tensor) -> "OldScores":
        """Empty scores (``mask`` shape ``(B, T)``) that the update's forwards fill."""
        zeros = torch.zeros(mask.shape, device=mask.device)
        return cls(zeros, zeros.clone(), from_update=True)

    def take(self, idx: Tensor, logp: Tensor, entropy: Tensor) -> Tensor:
        """The old log-probs of the sequences ``idx`` (shape ``(b,)``); when filled from the update, first record
        the forward's own ``logp`` and ``entropy`` (shape ``(b, T)``, detached) as theirs."""
        if self.from_update:
            self.logp = self.logp.to(logp.dtype)
            self.entropy = self.entropy.to(entropy.dtype)
            self.logp[idx] = logp.detach()
            self.entropy[idx] = entropy.detach()
        return self.logp[idx]


def entropy_split(metric: Any, entropy: Tensor, mask: Tensor, advantages: Tensor) -> dict[str, Tensor]:
    """Mean entropy of all / A>0 / A<0 response tokens over ranks, through ``metric`` (a
    :class:`~rlvr_lightning.metrics.TokenEntropy`, reset afterwards); tensors have shape ``(B, T)``."""
    metric.update(entropy, mask, advantages)
    split = metric.compute()
    metric.reset()
    return split


def accumulate_gradients(
    policy: nn.Module, loss_fn: Loss, scoring: Scoring, batch: RolloutBatch, mb: Tensor, old: OldScores,
    advantages: Tensor, *, ref_logp: Tensor | None, tis_cap: float | None, norms: dict[str, Any],
    context: dict[str, Any], backward: Callable[[Tensor], Any], world_size: int = 1, rank: int = 0,
    selection: Tensor | None = None,
) -> dict[str, Tensor]:
    """Forward and backward every micro-batch of the mini-batch ``mb``; the step's summed statistics.

    Args:
        policy: the trained causal LM.
        loss_fn: the loss of a micro-batch.
        scoring: how the forwards are cut and computed.
        batch: the rollout batch.
        mb: indices of the mini-batch's sequences, shape ``(n,)``.
        old: the sampling policy's scores (filled here when ``old.from_update``).
        advantages: per-token advantages, shape ``(B, T)``.
        ref_logp: the reference's log-probs, shape ``(B, T)``, or None.
        tis_cap: cap of the truncated importance weights (``Loss.tis_weights``); None: off.
        norms: the mini-batch's global normalizers (``Loss.normalizers``).
        context: the step context passed to the loss (step, epochs, measured entropy).
        backward: called with each micro-batch's loss (``manual_backward``).
        world_size: ranks (the loss is scaled by it, as gradients are averaged over ranks).
        rank: this rank (mixed into the random reweightings' sample keys).
        selection: the tokens a reweighting selected over the whole mini-batch, shape ``(B, T)``
            (:func:`rlvr_lightning.token_selection.mini_batch_selection`), or None.

    Returns:
        ``loss`` (summed over micro-batches, divided by ``world_size``) and each loss statistic weighted by the
        micro-batch's share of the mini-batch's tokens; 0-dim tensors.
    """
    mask, rollout = batch.response_mask, batch.rollout_logprobs
    part = lambda x, idx: None if x is None else x[idx]  # noqa: E731
    sums: dict[str, Tensor] = {}
    for micro, idx in enumerate(scoring.micro_batches(batch, mb)):
        logp, ent = scoring.logprobs(policy, batch.select(idx), grad=True)
        old_logp = old.take(idx, logp, ent)
        tis = Loss.tis_weights(old_logp, part(rollout, idx), tis_cap)
        loss, stats = loss_fn(
            logp, old_logp, advantages[idx], mask[idx], ent, ref_logp=part(ref_logp, idx), tis=tis,
            selection=part(selection, idx), sample_key=rank * 65_537 + micro, world_size=world_size, **norms,
            **context,
        )
        backward(loss)
        share = mask[idx].sum() / norms["num_tokens"]  # this micro-batch's share of the mini-batch's tokens
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * share
        sums["loss"] = sums.get("loss", 0) + loss.detach() / world_size
    return sums


__all__ = ["OldScores", "accumulate_gradients", "entropy_split", "has_dropout"]
