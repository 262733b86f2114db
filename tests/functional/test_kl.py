"""KL estimators against a NumPy transcription of Schulman's k1/k2/k3 (with verl's low_var_kl clamps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlvr_lightning.functional as F


def _ref(lp, ref, kind):
    d = lp - ref
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    x = np.clip(ref - lp, -20, 20)
    return np.clip(np.exp(x) - x - 1, -10, 10)


@pytest.mark.parametrize("kind", F.KL_KINDS)
def test_against_numpy(kind):
    gen = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 6, generator=gen, dtype=torch.float64) * 5
    ref = -torch.rand(4, 6, generator=gen, dtype=torch.float64) * 5
    lp[0, 0], ref[0, 1] = -60.0, -60.0  # hits the clamps
    np.testing.assert_allclose(
        F.kl_penalty(lp, ref, kind=kind).numpy(), _ref(lp.numpy(), ref.numpy(), kind), atol=1e-12
    )


def test_k3_nonnegative_and_zero_at_equality():
    x = torch.randn(100, dtype=torch.float64)
    assert torch.all(F.kl_penalty(x, x + torch.randn(100, dtype=torch.float64), kind="k3") >= 0)
    assert torch.equal(F.kl_penalty(x, x, kind="k3"), torch.zeros(100, dtype=torch.float64))


def test_unknown_kind_lists_valid():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        F.kl_penalty(torch.zeros(1), torch.zeros(1), kind="k4")
