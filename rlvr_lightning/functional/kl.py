"""Per-token KL estimators toward a reference policy (Schulman, "Approximating KL divergence", 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")


def kl_penalty(logp: Tensor, ref_logp: Tensor, *, kind: str) -> Tensor:
    """Per-token estimate of :math:`KL(\\pi \\| \\pi_{ref})` from the sampled tokens' log-probs.

    - ``"k1"``: :math:`\\log\\pi - \\log\\pi_{ref}`
    - ``"k2"``: :math:`\\tfrac12 (\\log\\pi - \\log\\pi_{ref})^2`
    - ``"k3"``: :math:`e^{d} - d - 1` with :math:`d = \\mathrm{clamp}(\\log\\pi_{ref} - \\log\\pi, -20, 20)`,
        the
      result clamped to ``[-10, 10]`` (verl's ``low_var_kl``; GRPO's KL term, arXiv 2402.03300).

    Args:
        logp: policy log-probs of the sampled tokens, shape ``(B, T)`` (any shape).
        ref_logp: reference log-probs, same shape.
        kind: one of :data:`KL_KINDS`.

    Returns:
        Per-token penalty, same shape (not masked: apply the mask when aggregating).

    Example:
        >>> lp, ref = torch.tensor([0.0, -1.0]), torch.tensor([-1.0, -1.0])
        >>> kl_penalty(lp, ref, kind="k1"), kl_penalty(lp, ref, kind="k2"), kl_penalty(lp, ref, kind="k3")
        (tensor([1., 0.]), tensor([0.5000, 0.0000]), tensor([0.3679, 0.0000]))
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp).square()
    if kind == "k3":
        d = torch.clamp(ref_logp - logp, -20.0, 20.0)
        return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown KL kind {kind!r}; valid kinds: {', '.join(KL_KINDS)}")
