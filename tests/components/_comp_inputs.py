"""Random ``(B, T)`` inputs with right padding for the component tests, and the built-in registry entries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr_lightning.components import AXES, Component

B, G, T = 8, 4, 7  # 2 prompts x 4 samples, 7 response tokens

# classes that need constructor arguments (everything else builds with no arguments)
REQUIRED_ARGS: dict[str, dict] = {"SeqMeanTokenSumNorm": {"max_len": T}}


def builtin_entries(axis: type[Component]) -> list[tuple[str, type]]:
    """(name, class) of the built-ins registered on ``axis`` (classes defined by tests are left out)."""
    return [(n, axis.get(n)) for n in axis.names() if axis.get(n).__module__.startswith("rlvr_lightning.")]


def all_builtin_params() -> list[tuple[type[Component], str]]:
    return [(axis, name) for axis in AXES for name, _ in builtin_entries(axis)]


def build(axis: type[Component], name: str) -> Component:
    cls = axis.get(name)
    return cls(**REQUIRED_ARGS.get(cls.__name__, {}))


@dataclass
class Inputs:
    mask: Tensor  # (B, T) bool
    scores: Tensor  # (B,)
    group_ids: Tensor  # (B,)
    logp: Tensor  # (B, T)
    old_logp: Tensor
    ref_logp: Tensor
    advantages: Tensor
    entropy: Tensor
    loss: Tensor

    def with_garbage(self, seed: int = 99) -> "Inputs":
        """A copy whose padded positions hold different (finite, extreme-ish) values."""
        g = torch.Generator().manual_seed(seed)
        pad = ~self.mask

        def fill(x: Tensor, noise: Tensor) -> Tensor:
            return torch.where(pad, noise, x)

        r = lambda: torch.rand(self.mask.shape, generator=g)  # noqa: E731
        return Inputs(
            mask=self.mask,
            scores=self.scores,
            group_ids=self.group_ids,
            logp=fill(self.logp, -8.0 * r()),
            old_logp=fill(self.old_logp, -8.0 * r()),
            ref_logp=fill(self.ref_logp, -8.0 * r()),
            advantages=fill(self.advantages, 40.0 * (r() - 0.5)),
            entropy=fill(self.entropy, 50.0 + r()),  # far above every valid entropy
            loss=fill(self.loss, 1e3 * (r() - 0.5)),
        )


def make_inputs(seed: int = 0) -> Inputs:
    """Valid tokens form a prefix of each row (lengths 1..T, one full row); padding holds zeros."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 3, 5, 1, 6, 2, 4, 7])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    group_ids = torch.arange(B) // G
    logp = -3.0 * torch.rand(B, T, generator=g) - 0.05
    old_logp = logp + 0.3 * torch.randn(B, T, generator=g)
    ref_logp = logp + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)[:, None].expand(B, T).clone()
    adv[5] = 0.0  # a zero-advantage row
    entropy = 2.0 * torch.rand(B, T, generator=g)
    loss = torch.randn(B, T, generator=g)
    z = lambda x: torch.where(mask, x, torch.zeros_like(x))  # noqa: E731
    return Inputs(mask, scores, group_ids, z(logp), z(old_logp), z(ref_logp), z(adv), z(entropy), z(loss))
