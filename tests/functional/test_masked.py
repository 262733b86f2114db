"""Masked reductions against NumPy on the valid elements only; garbage on masked positions changes nothing."""

from __future__ import annotations

import numpy as np
import torch

import rlvr_lightning.functional as F


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 7, generator=gen) < 0.6
    mask[0, 0] = mask[1, 1] = True
    garbage = torch.where(mask, x, torch.full_like(x, 1e6))
    return x, garbage, mask


def test_against_numpy():
    x, garbage, mask = _data()
    v = x.numpy()[mask.numpy()]
    torch.testing.assert_close(F.masked_sum(garbage, mask), torch.tensor(v.sum(), dtype=torch.float64))
    torch.testing.assert_close(F.masked_mean(garbage, mask), torch.tensor(v.mean(), dtype=torch.float64))
    torch.testing.assert_close(F.masked_var(garbage, mask), torch.tensor(v.var(ddof=1), dtype=torch.float64))
    torch.testing.assert_close(
        F.masked_var(garbage, mask, unbiased=False), torch.tensor(v.var(), dtype=torch.float64)
    )
    w = F.masked_whiten(garbage, mask)
    expected = np.where(mask.numpy(), (x.numpy() - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)
    torch.testing.assert_close(w, torch.from_numpy(expected))


def test_rowwise_mean_and_empty_row():
    x, garbage, mask = _data(1)
    mask[2] = False
    rows = F.masked_mean(garbage, mask, dim=1)
    for i in range(5):
        vals = x[i][mask[i]]
        expected = vals.mean() if len(vals) else torch.tensor(0.0, dtype=torch.float64)
        torch.testing.assert_close(rows[i], expected)
