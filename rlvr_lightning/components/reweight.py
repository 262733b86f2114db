"""Built-in token reweightings: uniform, Positive-Advantage Reweighting (PAR) and its lambda schedules, and
the token-selection baselines the paper compares (sign-only training, random positive drop, high-entropy
tokens, Clip-Cov, KL-Cov).

Each maps a :class:`~rlvr_lightning.components.base.ReweightContext` to per-token weights ``(B, T)``, 0 on
padding, that multiply the surrogate loss before aggregation (the normalizer is unchanged). The math and token
selection live in :mod:`rlvr_lightning.functional.reweighting`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.components._validate import check_range
from rlvr_lightning.components.base import Reweight, ReweightContext
from rlvr_lightning.seeding import resolve_seed


def _generator(device: torch.device, seed: int, ctx: ReweightContext) -> torch.Generator:
    """A generator seeded from ``(seed, ctx.step, ctx.sample_key)`` alone: the same draws after a resume, new
    draws every step, micro-batch and rank."""
    g = torch.Generator(device=device)
    mixed = (int(seed) * 1_000_003 + int(ctx.step)) * 1_000_033 + int(ctx.sample_key)
    g.manual_seed(mixed % (2**63 - 1))
    return g


@Reweight.register("uniform")
class Uniform(Reweight):
    """Weight 1 on every valid token (plain GRPO)."""

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)``: 1 on valid tokens of ``ctx.mask``, 0 on padding."""
        return ctx.mask.to(ctx.advantages.dtype)


class _PARBase(Reweight):
    """PAR with lambda from :meth:`lam_for`: ``lambda`` where ``A > 0``, 1 where ``A <= 0``, 0 on padding."""

    _lam: float | None = None

    def lam_for(self, ctx: ReweightContext) -> float:
        raise NotImplementedError

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """PAR weights ``(B, T)`` from ``ctx.advantages`` ``(B, T)`` and ``ctx.mask`` ``(B, T)``."""
        self._lam = self.lam_for(ctx)
        return F.par_weights(ctx.advantages, ctx.mask, lam=self._lam)

    def log_values(self) -> dict[str, float]:
        return {} if self._lam is None else {"lambda": self._lam}


@Reweight.register("par")
class PAR(_PARBase):
    """Positive-Advantage Reweighting with a constant lambda (arXiv 2511.05993).

    ``w_it = lambda`` if ``A_it > 0``, ``1`` otherwise. ``lambda = 1`` is plain GRPO; ``lambda = 0`` trains on
    ``A <= 0`` tokens only. Positive-advantage tokens concentrate probability mass (entropy falls), so a
    lambda below 1 slows the collapse. The default 0.5 halves their push (the paper's value is not known).

    Args:
        lam: weight of positive-advantage tokens; in ``[0, 1]``.
    """

    def __init__(self, lam: float = 0.5) -> None:
        self.lam = check_range(type(self).__name__, "lam", lam, low=0.0, high=1.0)
        self._lam = self.lam

    def lam_for(self, ctx: ReweightContext) -> float:
        return self.lam


@Reweight.register("par_stage")
class StagePAR(_PARBase):
    """Stage-based PAR: ``lambda = 0`` until ``start`` of training, then linear from 0 to 1 at the end.

    ``lambda = max(0, (p - start) / (1 - start))`` with ``p = ctx.progress``; the paper uses ``start = 0.5``.
    Needs ``ctx.total_steps`` or ``ctx.total_epochs``.

    Args:
        start: fraction of training after which lambda ramps up; in ``[0, 1)``.
    """

    def __init__(self, start: float = 0.5) -> None:
        self.start = check_range(type(self).__name__, "start", start, low=0.0, high=1.0, high_open=True)
        self._lam = 0.0

    def lam_for(self, ctx: ReweightContext) -> float:
        if ctx.total_steps <= 0 and ctx.total_epochs <= 0:
            raise ValueError("StagePAR needs the run length: ctx.total_steps or ctx.total_epochs must be > 0")
        return max(0.0, (ctx.progress - self.start) / (1.0 - self.start))


@Reweight.register("par_epoch")
class EpochPAR(_PARBase):
    """Epoch-wise PAR: ``lambda = (e - 1) / (E - 1)`` in data epoch ``e`` of ``E`` (``E = 1`` gives 1).

    Needs ``ctx.total_epochs``.
    """

    def lam_for(self, ctx: ReweightContext) -> float:
        if ctx.total_epochs <= 0:
            raise ValueError("EpochPAR needs ctx.total_epochs > 0 (the planned number of data epochs)")
        if ctx.total_epochs == 1:
            return 1.0
        return min(max((ctx.epoch - 1) / (ctx.total_epochs - 1), 0.0), 1.0)


@Reweight.register("par_entropy")
class EntropyGuidedPAR(_PARBase):
    """Entropy-guided PAR, the paper's main method: lambda steers the entropy toward ``delta``.

    After each rollout batch, with its measured mean token entropy ``H``: ``lambda <- clip(lambda - step, 0, 1)`` if
    ``H < delta``, else ``clip(lambda + step, 0, 1)``. Low entropy lowers lambda (less push from positive
    tokens, entropy rises); high entropy raises it. lambda is saved in the checkpoint.

    Args:
        delta: entropy threshold; ``>= 0``.
        step: change of lambda per rollout batch; in ``[0, 1]``.
        lam0: initial lambda; in ``[0, 1]``.
    """

    def __init__(self, delta: float = 0.2, step: float = 0.05, lam0: float = 0.0) -> None:
        name = type(self).__name__
        self.delta = check_range(name, "delta", delta, low=0.0)
        self.step = check_range(name, "step", step, low=0.0, high=1.0)
        self.lam0 = check_range(name, "lam0", lam0, low=0.0, high=1.0)
        self.lam = self.lam0
        self._lam = self.lam

    def lam_for(self, ctx: ReweightContext) -> float:
        return self.lam

    def update(self, measured_entropy: float) -> None:
        """Move lambda one step: down when ``measured_entropy < delta``, up otherwise, within ``[0, 1]``."""
        delta = -self.step if float(measured_entropy) < self.delta else self.step
        self.lam = min(max(self.lam + delta, 0.0), 1.0)
        self._lam = self.lam

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])
        self._lam = self.lam


@Reweight.register("positive_only")
class PositiveOnly(Reweight):
    """Train on ``A >= 0`` tokens only (weight 1), others 0: the paper's entropy-collapse probe."""

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)`` from ``ctx.advantages`` and ``ctx.mask``, both ``(B, T)``."""
        return F.sign_mask(ctx.advantages, ctx.mask, keep="nonnegative").to(ctx.advantages.dtype)


@Reweight.register("negative_only")
class NegativeOnly(Reweight):
    """Train on ``A <= 0`` tokens only (weight 1), others 0 (negative sample reinforcement, 2506.01347)."""

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)`` from ``ctx.advantages`` and ``ctx.mask``, both ``(B, T)``."""
        return F.sign_mask(ctx.advantages, ctx.mask, keep="nonpositive").to(ctx.advantages.dtype)


@Reweight.register("random_positive_drop")
class RandomPositiveDrop(Reweight):
    """Drop each positive-advantage token with probability ``frac`` (weight 0); other valid tokens weight 1.

    The paper's "random clipping of positive tokens" baseline. The draw is a pure function of
    ``(seed, ctx.step)``, so it is reproducible and survives a resume.

    Args:
        frac: drop probability of each ``A > 0`` token; in ``[0, 1]``.
        seed: base seed of the draws (None: the run's ``seed_everything``).
    """

    def __init__(self, frac: float = 0.2, seed: int | None = None) -> None:
        self.frac = check_range(type(self).__name__, "frac", frac, low=0.0, high=1.0)
        self.seed = resolve_seed(seed)

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)`` from ``ctx.advantages`` and ``ctx.mask``, both ``(B, T)``."""
        g = _generator(ctx.mask.device, self.seed, ctx)
        return F.random_drop_positive(ctx.advantages, ctx.mask, drop_frac=self.frac, generator=g).to(
            ctx.advantages.dtype
        )


@Reweight.register("high_entropy")
class HighEntropyTokens(Reweight):
    """Update only the high-entropy minority (Wang et al., arXiv 2506.01939): weight 1 on the top-``rho``
    fraction of the valid tokens of the batch by entropy (``ceil(rho * N_valid)`` tokens), 0 elsewhere.

    Args:
        rho: fraction of valid tokens kept; in ``(0, 1]``.
    """

    def __init__(self, rho: float = 0.2) -> None:
        self.rho = check_range(type(self).__name__, "rho", rho, low=0.0, high=1.0, low_open=True)

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)`` from ``ctx.entropy`` and ``ctx.mask``, both ``(B, T)``."""
        return F.top_entropy_mask(ctx.entropy, ctx.mask, rho=self.rho).to(ctx.advantages.dtype)


@Reweight.register("clip_cov")
class ClipCov(Reweight):
    """Clip-Cov (Cui et al., arXiv 2505.22617): detach a few high-covariance tokens from the gradient.

    Score ``c_it = (A_it - mean A)(logp_it - mean logp)`` over the valid tokens of the mini-batch; among tokens
    with ``lower < c_it < upper``, ``max(1, floor(clip_ratio * N_valid))`` drawn at random get weight 0 (no
    gradient). In training the selection covers the whole mini-batch, over its micro-batches and data-parallel
    ranks (:mod:`rlvr_lightning.token_selection`); the draw is a pure function of ``(seed, ctx.step)`` and of the
    tokens. Called on a context without ``selection`` (a plain loop), it selects among that context's tokens, with a
    draw that also depends on ``ctx.sample_key``. Unlike verl, tokens already clipped by PPO are not excluded from
    the draw (the reweighting does not see the clip decisions).

    Args:
        clip_ratio: fraction of valid tokens to drop; in ``(0, 1]``.
        lower: lower bound of the covariance band.
        upper: upper bound of the covariance band; ``> lower``.
        seed: base seed of the draws (None: the run's ``seed_everything``).
    """

    selects_tokens = True

    def __init__(
        self, clip_ratio: float = 0.0002, lower: float = 1.0, upper: float = 5.0, seed: int | None = None
    ) -> None:
        name = type(self).__name__
        self.clip_ratio = check_range(name, "clip_ratio", clip_ratio, low=0.0, high=1.0, low_open=True)
        self.lower = float(lower)
        self.upper = check_range(name, "upper", upper, low=self.lower, low_open=True)
        self.seed = resolve_seed(seed)
        self._selected: Tensor | None = None

    def select(self, ctx: ReweightContext) -> Tensor:
        """The dropped tokens, bool ``(B, T)``, from ``ctx.logp``, ``ctx.advantages`` and ``ctx.mask``."""
        sel = F.clip_cov_select(ctx.logp, ctx.advantages, ctx.mask, clip_ratio=self.clip_ratio, lower=self.lower,
                                upper=self.upper, generator=_generator(ctx.mask.device, self.seed, ctx))
        self._selected = sel.sum() / ctx.mask.sum().clamp(min=1)  # a tensor: no host sync until logged
        return sel

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)``: 0 on ``ctx.selection`` (else :meth:`select`) and padding, 1 elsewhere."""
        sel = self.select(ctx) if ctx.selection is None else ctx.selection
        w = torch.where(sel, 0.0, 1.0).to(ctx.advantages.dtype)
        return torch.where(ctx.mask.bool(), w, torch.zeros_like(w))

    def log_values(self) -> dict[str, float]:
        return {} if self._selected is None else {"cov_selected_frac": float(self._selected)}


@Reweight.register("kl_cov")
class KLCov(Reweight):
    """KL-Cov (Cui et al., arXiv 2505.22617): a KL penalty on the highest-covariance tokens.

    Weights are 1 on every valid token; :meth:`extra_loss` adds ``coef * |logp - old_logp|`` on the top
    ``max(1, floor(k_ratio * N_valid))`` valid tokens of the mini-batch by covariance score
    ``(A - mean A)(logp - mean logp)``, 0 elsewhere (verl's ``kl_cov``, which ranks within each GPU's batch). In
    training the ranking covers the whole mini-batch, over its micro-batches and data-parallel ranks
    (:mod:`rlvr_lightning.token_selection`; ties go to the earlier sequence of the rollout batch, then the earlier
    position); on a context without ``selection`` it ranks that context's tokens.

    Args:
        k_ratio: fraction of valid tokens penalized; in ``(0, 1]``.
        coef: penalty coefficient; ``>= 0``.
    """

    selects_tokens = True

    def __init__(self, k_ratio: float = 0.0002, coef: float = 1.0) -> None:
        self.k_ratio = check_range(type(self).__name__, "k_ratio", k_ratio, low=0.0, high=1.0, low_open=True)
        self.coef = check_range(type(self).__name__, "coef", coef, low=0.0)
        self._selected: Tensor | None = None

    def __call__(self, ctx: ReweightContext) -> Tensor:
        """Weights ``(B, T)``: 1 on valid tokens of ``ctx.mask``, 0 on padding."""
        return ctx.mask.to(ctx.advantages.dtype)

    def select(self, ctx: ReweightContext) -> Tensor:
        """The penalized tokens, bool ``(B, T)``, from ``ctx.logp``, ``ctx.advantages`` and ``ctx.mask``."""
        sel = F.kl_cov_select(ctx.logp, ctx.advantages, ctx.mask, k_ratio=self.k_ratio)
        self._selected = sel.sum() / ctx.mask.sum().clamp(min=1)  # a tensor: no host sync until logged
        return sel

    def extra_loss(self, ctx: ReweightContext, logp: Tensor) -> Tensor:
        """Per-token penalty ``(B, T)`` on ``ctx.selection`` (else :meth:`select`); ``logp`` ``(B, T)`` carries
        gradients."""
        sel = self.select(ctx) if ctx.selection is None else ctx.selection
        return F.kl_cov_penalty(logp, ctx.old_logp, ctx.advantages, ctx.mask, coef=self.coef, selection=sel)

    def log_values(self) -> dict[str, float]:
        return {} if self._selected is None else {"cov_selected_frac": float(self._selected)}
