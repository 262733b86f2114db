"""Built-in surrogate losses (the Clip axis): PPO clipping, no clipping, CISPO and GSPO.

Each maps ``(logp, old_logp, advantages, mask)``, all of shape ``(B, T)``, to a per-token loss ``(B, T)`` to
be minimized (0 on padding) and a dict of detached scalar statistics. The math lives in
:mod:`rlvr_lightning.functional.surrogates`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.components._validate import check_range
from rlvr_lightning.components.base import Clip

_ARGS_DOC = """
        Args:
            logp: current policy log-probs of the sampled tokens (carry gradients), shape ``(B, T)``.
            old_logp: log-probs under the sampling policy, shape ``(B, T)``.
            advantages: per-token advantages, shape ``(B, T)``.
            mask: True on real response tokens, shape ``(B, T)``.

        Returns:
            ``(loss, stats)``: per-token loss, shape ``(B, T)``, 0 on padding; detached scalar statistics.
"""


@Clip.register("ppo")
class PPOClip(Clip):
    """PPO clipped surrogate (Schulman et al. 2017) with asymmetric bounds and dual clip (Ye et al. 2020).

    ``loss = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = exp(logp - old_logp)``; for
    ``A < 0`` the loss is further capped at ``-dual_clip * A``. The paper's clip settings are parameter sets:
    symmetric (``eps_low = eps_high = 0.2``), Clip-Higher (``eps_high = 0.28``, DAPO), Clip-Lower
    (``eps_low = 0.28``) and Clip-Tighter (``eps_low = 0.12``).

    Args:
        eps_low: lower clip range, the ratio is kept above ``1 - eps_low``; in ``[0, 1)``.
        eps_high: upper clip range, the ratio is kept below ``1 + eps_high``; ``>= 0``.
        dual_clip: the constant ``c > 1`` of the dual clip for negative advantages; ``None`` turns it off.
    """

    def __init__(self, eps_low: float = 0.2, eps_high: float = 0.2, dual_clip: float | None = 3.0) -> None:
        name = type(self).__name__
        self.eps_low = check_range(name, "eps_low", eps_low, low=0.0, high=1.0, high_open=True)
        self.eps_high = check_range(name, "eps_high", eps_high, low=0.0)
        self.dual_clip = (
            None if dual_clip is None else check_range(name, "dual_clip", dual_clip, low=1.0, low_open=True)
        )

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return F.clipped_surrogate(
            logp,
            old_logp,
            advantages,
            mask,
            eps_low=self.eps_low,
            eps_high=self.eps_high,
            dual_clip=self.dual_clip,
        )

    __call__.__doc__ = "Clipped per-token surrogate loss.\n" + _ARGS_DOC


@Clip.register("none")
class NoClip(Clip):
    """Clip-Free: the importance-weighted policy gradient ``loss = -r A``, ``r = exp(logp - old_logp)``."""

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return F.unclipped_surrogate(logp, old_logp, advantages, mask)

    __call__.__doc__ = "Unclipped per-token surrogate loss.\n" + _ARGS_DOC


class _RangeClip(Clip):
    """A clip whose loss is ``surrogate(logp, old_logp, advantages, mask, eps_low=..., eps_high=...)``; subclasses
    set ``surrogate`` and validate their ``eps_low`` / ``eps_high``."""

    surrogate: Callable[..., tuple[Tensor, dict[str, Tensor]]]
    eps_low: float
    eps_high: float

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.surrogate(logp, old_logp, advantages, mask, eps_low=self.eps_low, eps_high=self.eps_high)

    __call__.__doc__ = "Per-token surrogate loss.\n" + _ARGS_DOC


@Clip.register("cispo")
class CISPO(_RangeClip):
    """CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance weight, not the update.

    ``loss = -sg(clip(r, 1 - eps_low, 1 + eps_high)) A logp``: every token keeps a gradient. MiniMax-M1 sets
    no lower bound (``eps_low = 1``) and tunes only ``eps_high``.

    Args:
        eps_low: lower clip range of the weight; in ``[0, 1]`` (1: no lower bound, the default).
        eps_high: upper clip range of the weight; ``>= 0``.
    """

    def __init__(self, eps_low: float = 1.0, eps_high: float = 0.28) -> None:
        name = type(self).__name__
        self.eps_low = check_range(name, "eps_low", eps_low, low=0.0, high=1.0)
        self.eps_high = check_range(name, "eps_high", eps_high, low=0.0)

    surrogate = staticmethod(F.cispo_surrogate)


@Clip.register("gspo")
class GSPO(_RangeClip):
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): PPO clipping of the length-normalized sequence ratio.

    ``s_i = exp(mean_t (logp - old_logp))`` over sequence ``i``'s valid tokens, applied token-wise as
    ``sg(s_i) * exp(logp - sg(logp))`` and clipped to ``[1 - eps_low, 1 + eps_high]``. The tiny defaults are
    the GSPO paper's (3e-4, 4e-4): the sequence ratio stays close to 1.

    Args:
        eps_low: lower clip range of the sequence ratio; in ``[0, 1)``.
        eps_high: upper clip range of the sequence ratio; ``>= 0``.
    """

    def __init__(self, eps_low: float = 3e-4, eps_high: float = 4e-4) -> None:
        name = type(self).__name__
        self.eps_low = check_range(name, "eps_low", eps_low, low=0.0, high=1.0, high_open=True)
        self.eps_high = check_range(name, "eps_high", eps_high, low=0.0)

    surrogate = staticmethod(F.gspo_surrogate)
