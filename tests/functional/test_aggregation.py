"""Aggregation modes against NumPy; micro-batches with global normalizers sum to the big batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlvr_lightning.functional as F


def _batch(seed=0, b=10, t=7):
    gen = torch.Generator().manual_seed(seed)
    loss = torch.randn(b, t, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, t, generator=gen) < 0.6
    mask[4] = False  # an empty row
    return loss, mask


def _numpy(loss, mask, mode, max_len):
    x, m = loss.numpy(), mask.numpy()
    rows = [i for i in range(len(m)) if m[i].any()]
    if mode == "token-mean":
        return x[m].mean()
    if mode == "seq-mean-token-mean":
        return np.mean([x[i][m[i]].mean() for i in rows])
    s = np.mean([x[i][m[i]].sum() for i in rows])
    return s / max_len if mode == "seq-mean-token-sum-norm" else s


@pytest.mark.parametrize("mode", F.AGG_MODES)
def test_modes_match_numpy_and_ignore_padding(mode):
    loss, mask = _batch()
    garbage = torch.where(mask, loss, torch.full_like(loss, 3e7))
    out = F.aggregate(garbage, mask, mode=mode, max_len=12)
    assert out.item() == pytest.approx(_numpy(loss, mask, mode, 12), abs=1e-12)


@pytest.mark.parametrize("mode", F.AGG_MODES)
def test_micro_batches_with_global_normalizers_equal_big_batch(mode):
    loss, mask = _batch(1, b=12)
    big = F.aggregate(loss, mask, mode=mode, max_len=9)
    n_tok, n_seq = mask.sum(), mask.any(-1).sum()
    parts = [
        F.aggregate(loss[i : i + 3], mask[i : i + 3], mode=mode, num_tokens=n_tok, num_seqs=n_seq, max_len=9)
        for i in range(0, 12, 3)
    ]
    torch.testing.assert_close(sum(parts), big, atol=1e-12, rtol=0)
    floats = [
        F.aggregate(
            loss[i : i + 4],
            mask[i : i + 4],
            mode=mode,
            num_tokens=float(n_tok),
            num_seqs=float(n_seq),
            max_len=9,
        )
        for i in range(0, 12, 4)
    ]
    torch.testing.assert_close(sum(floats), big, atol=1e-12, rtol=0)


def test_gradient_matches_naive():
    loss, mask = _batch(2)
    x = loss.clone().requires_grad_(True)
    F.aggregate(x, mask, mode="seq-mean-token-mean").backward()
    n_seq = mask.any(-1).sum()
    expected = mask / mask.sum(-1, keepdim=True).clamp(min=1) / n_seq
    torch.testing.assert_close(x.grad, expected.double())


def test_errors():
    loss, mask = _batch()
    with pytest.raises(ValueError, match="token-mean, seq-mean-token-sum"):
        F.aggregate(loss, mask, mode="sum")
    with pytest.raises(ValueError, match="max_len"):
        F.aggregate(loss, mask, mode="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="shape"):
        F.aggregate(loss[0], mask[0])
