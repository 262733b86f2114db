"""``Loss``: the RLVR loss of one micro-batch as one object, composed from the six components.

:class:`Loss` owns an :class:`~rlvr_lightning.components.base.Advantage`, a ``Clip``, a ``Reweight``, an
``Aggregation``, a ``KLPenalty`` and an ``EntropyBonus`` and turns plain tensors into the aggregated loss and its
statistics. ``RLVRModule`` calls it once per micro-batch; a plain PyTorch loop calls it the same way::

    loss_fn = Loss(reweight=PAR(lam=0.5))
    advantages = loss_fn.advantages(scores, group_ids, mask)            # (B, T)
    loss, stats = loss_fn(logp, old_logp, advantages, mask, entropy=entropy)
    loss.backward()

Per token, in this order, then aggregated with the mini-batch's normalizers (and multiplied by the data-parallel
world size, since DDP/FSDP average gradients over ranks)::

    clip(logp, old_logp, A) * reweight(ctx) [+ reweight.extra_loss(ctx, logp)] [* tis] [+ kl] [+ entropy_bonus]

Shapes: B sequences, T response tokens.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from rlvr_lightning.components.advantages import GRPO
from rlvr_lightning.components.aggregation import TokenMean
from rlvr_lightning.components.base import (Advantage, Aggregation, Clip, Component, EntropyBonus, KLPenalty,
                                            Reweight, ReweightContext)
from rlvr_lightning.components.clip import PPOClip
from rlvr_lightning.components.entropy import NoEntropyBonus
from rlvr_lightning.components.kl import NoKL
from rlvr_lightning.components.reweight import Uniform

COMPONENTS: tuple[str, ...] = ("advantage", "clip", "reweight", "aggregation", "kl", "entropy_bonus")
"""The attribute names of the six components, in the order a training step applies them."""


class Loss(nn.Module):
    """The composed RLVR loss: advantages, surrogate, reweighting, TIS, KL, entropy bonus, aggregation.

    The components are plain objects (no parameters): the module's ``state_dict`` stays empty, and stateful
    components are saved through :meth:`component_state_dict`.

    Args:
        advantage: how scores become per-token advantages (None: ``GRPO()``).
        clip: the per-token surrogate loss (None: ``PPOClip()``).
        reweight: per-token weights of the surrogate, PAR among them (None: ``Uniform()``).
        aggregation: how per-token losses become a scalar (None: ``TokenMean()``).
        kl: KL penalty toward the reference (None: ``NoKL()``, no reference needed).
        entropy_bonus: entropy regularization (None: ``NoEntropyBonus()``).
    """

    def __init__(
        self,
        advantage: Advantage | None = None,
        clip: Clip | None = None,
        reweight: Reweight | None = None,
        aggregation: Aggregation | None = None,
        kl: KLPenalty | None = None,
        entropy_bonus: EntropyBonus | None = None,
    ) -> None:
        super().__init__()
        self.advantage = GRPO() if advantage is None else advantage
        self.clip = PPOClip() if clip is None else clip
        self.reweight = Uniform() if reweight is None else reweight
        self.aggregation = TokenMean() if aggregation is None else aggregation
        self.kl = NoKL() if kl is None else kl
        self.entropy_bonus = NoEntropyBonus() if entropy_bonus is None else entropy_bonus

    def forward(
        self,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor,
        entropy: Tensor | None = None,
        *,
        ref_logp: Tensor | None = None,
        tis: Tensor | None = None,
        selection: Tensor | None = None,
        step: int = 0,
        total_steps: int = -1,
        epoch: int = 1,
        total_epochs: int = -1,
        measured_entropy: float | None = None,
        sample_key: int = 0,
        num_tokens: Tensor | float | None = None,
        num_seqs: Tensor | float | None = None,
        world_size: int = 1,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The aggregated loss of one micro-batch and its detached statistics.

        Args:
            logp: current policy log-probs of the sampled tokens (carry gradients), shape ``(B, T)``.
            old_logp: log-probs under the policy that sampled the batch, shape ``(B, T)``.
            advantages: per-token advantages (see :meth:`advantages`), shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.
            entropy: current policy token entropy, shape ``(B, T)``; it carries gradients when an entropy bonus
                is on (required then). None: the reweighting sees ``-logp`` (detached), the sampled token's
                surprisal, whose expectation is the entropy.
            ref_logp: reference policy log-probs, shape ``(B, T)``; required when ``kl.needs_reference``.
            tis: per-token rollout-correction weights (truncated importance sampling), shape ``(B, T)``.
            selection: the tokens the reweighting selected over the whole mini-batch (when it ``selects_tokens``:
                Clip-Cov, KL-Cov), this micro-batch's part, bool, shape ``(B, T)``; None: it selects among these
                tokens.
            step: optimizer steps taken so far (0-based).
            total_steps: planned optimizer steps (``-1``: unknown).
            epoch: current data epoch (1-based).
            total_epochs: planned data epochs (``-1``: unknown).
            measured_entropy: mean token entropy of the rollout batch under the sampling policy.
            sample_key: differs between micro-batches and ranks (seeds random reweightings).
            num_tokens: valid tokens of the whole mini-batch over micro-batches and ranks (None: ``mask``'s).
            num_seqs: non-empty sequences of the whole mini-batch (None: ``mask``'s).
            world_size: data-parallel ranks; the loss is multiplied by it.

        Returns:
            ``(loss, stats)``: a 0-dim tensor, and detached 0-dim statistics (the clip's ``clip_frac``,
            ``approx_kl`` ..., and ``kl_ref``, the plain KL estimate, when a KL term is on).
        """
        if entropy is None:
            if self.entropy_bonus.enabled:
                raise ValueError(f"{type(self.entropy_bonus).__name__} needs the policy's entropy: pass entropy=")
            entropy = -logp.detach()
        loss_tok, stats = self.clip(logp, old_logp, advantages, mask)
        ctx = ReweightContext(
            advantages=advantages, logp=logp.detach(), old_logp=old_logp, entropy=entropy.detach(), mask=mask,
            step=step, total_steps=total_steps, epoch=epoch, total_epochs=total_epochs,
            measured_entropy=measured_entropy, sample_key=sample_key, selection=selection,
        )
        loss_tok = loss_tok * self.reweight(ctx)
        extra = self.reweight.extra_loss(ctx, logp)
        if extra is not None:
            loss_tok = loss_tok + extra
        if tis is not None:
            loss_tok = loss_tok * tis
        if self.kl.needs_reference:
            if ref_logp is None:
                raise ValueError(f"{type(self.kl).__name__} needs the reference log-probs: pass ref_logp=")
            kl_tok = self.kl(logp, ref_logp, mask)
            loss_tok = loss_tok + kl_tok
            coef = float(self.kl.coef) or 1.0  # kl_ref: the plain KL estimate, without the coefficient
            stats["kl_ref"] = (kl_tok.detach() / coef * mask).sum() / mask.sum().clamp(min=1)
        if self.entropy_bonus.enabled:
            loss_tok = loss_tok + self.entropy_bonus(entropy, mask)
        loss = self.aggregation(loss_tok, mask, num_tokens=num_tokens, num_seqs=num_seqs) * world_size
        return loss, stats

    def advantages(self, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
        """Per-token advantages from sequence scores.

        Args:
            scores: reward of each sequence, shape ``(B,)``.
            group_ids: integer id of each sequence's prompt group, shape ``(B,)``.
            mask: True on real response tokens, shape ``(B, T)``.

        Returns:
            Advantages, shape ``(B, T)``.
        """
        return self.advantage(scores, group_ids, mask)

    @staticmethod
    def tis_weights(old_logp: Tensor, rollout_logp: Tensor | None, cap: float | None) -> Tensor | None:
        """Truncated importance sampling weights ``min(pi_old / pi_rollout, cap)``, shape ``(B, T)``: they
        correct the mismatch between the rollout engine's sampling and the trainer's numerics.

        Args:
            old_logp: log-probs under the sampling policy as the trainer computes them, shape ``(B, T)``.
            rollout_logp: the rollout engine's log-probs of the same tokens, shape ``(B, T)``; None: no weights.
            cap: the largest weight; None: no weights.
        """
        if cap is None or rollout_logp is None:
            return None
        return torch.exp((old_logp - rollout_logp).clamp(-20, 20)).clamp(max=cap)

    def normalizers(self, mask: Tensor, all_reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
        """The global counts the aggregation divides by, for one mini-batch: ``num_tokens`` and ``num_seqs``.

        Args:
            mask: True on real response tokens of this rank's share of the mini-batch, shape ``(B, T)``.
            all_reduce: sums a 0-dim tensor over data-parallel ranks (None: one rank).

        Returns:
            ``{"num_tokens": 0-dim tensor, "num_seqs": 0-dim tensor or None}``, each at least 1;
            ``num_seqs`` is counted only when the aggregation divides by it (one all-reduce less otherwise).
        """
        reduce = all_reduce or (lambda x: x)
        num_tokens = reduce(mask.sum().float()).clamp(min=1)
        num_seqs = (reduce(mask.any(-1).sum().float()).clamp(min=1)
                    if "seqs" in self.aggregation.normalizers else None)
        return {"num_tokens": num_tokens, "num_seqs": num_seqs}

    @property
    def needs_reference(self) -> bool:
        """Whether the KL term needs reference log-probs (and so a reference model)."""
        return bool(self.kl.needs_reference)

    def components(self) -> dict[str, Component]:
        """The six components by attribute name, in the order they are applied."""
        return {name: getattr(self, name) for name in COMPONENTS}

    def update(self, measured_entropy: float) -> None:
        """Step every stateful component once per rollout batch with the batch's mean token entropy."""
        for comp in self.components().values():
            comp.update(measured_entropy)

    def log_values(self) -> dict[str, float]:
        """The components' loggable scalars (``lambda``, ``kl_coef``, ``entropy_coef`` ...)."""
        return {k: v for comp in self.components().values() for k, v in comp.log_values().items()}

    def component_state_dict(self) -> dict[str, dict[str, Any]]:
        """Every component's ``state_dict()`` by attribute name (empty for stateless ones)."""
        return {name: comp.state_dict() for name, comp in self.components().items()}

    def load_component_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Restore what :meth:`component_state_dict` returned (components missing from ``state`` keep theirs)."""
        for name, comp_state in state.items():
            if name not in COMPONENTS:
                raise KeyError(f"no loss component named {name!r}; components: {', '.join(COMPONENTS)}")
            getattr(self, name).load_state_dict(comp_state)

    def extra_repr(self) -> str:
        return "\n".join(f"({name}): {comp!r}" for name, comp in self.components().items())


__all__ = ["COMPONENTS", "Loss"]
