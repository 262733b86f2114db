"""Confidence, ECE, Brier score and AUROC against torchmetrics, NumPy and naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

from rlvr_lightning.functional import (
    brier_score,
    confidence_auroc,
    expected_calibration_error,
    sequence_confidence,
)
from rlvr_lightning.metrics import BrierScore, CalibrationError, ConfidenceAUROC


def _data(seed: int, n: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g)
    correct = (torch.rand(n, generator=g) < conf**2).long()
    # edge values: exact bin boundaries, 0 and 1
    conf[:6] = torch.tensor([0.0, 1.0, 1.0, 1 / 15, 2 / 15, 0.5])
    return conf, correct


@pytest.mark.parametrize("n_bins", [1, 10, 15, 37])
def test_ece_matches_torchmetrics(n_bins):
    for seed in range(3):
        conf, correct = _data(seed)
        want = binary_calibration_error(conf, correct, n_bins=n_bins, norm="l1")
        got = expected_calibration_error(conf, correct, n_bins=n_bins)
        assert abs(float(got) - float(want)) < 1e-6


def test_calibration_error_metric_accumulates():
    conf, correct = _data(5)
    m = CalibrationError(n_bins=15)
    for sl in (slice(0, 100), slice(100, 333), slice(333, 500)):
        m.update(conf[sl], correct[sl])
    assert abs(float(m.compute()) - float(expected_calibration_error(conf, correct, n_bins=15))) < 1e-12
    assert abs(float(m.compute()) - float(binary_calibration_error(conf, correct, n_bins=15))) < 1e-6


def test_brier_matches_numpy_and_accumulates():
    conf, correct = _data(6)
    want = np.mean((conf.numpy().astype(np.float64) - correct.numpy()) ** 2)
    assert abs(float(brier_score(conf, correct)) - want) < 1e-12
    m = BrierScore()
    m.update(conf[:123], correct[:123])
    m.update(conf[123:], correct[123:])
    assert abs(float(m.compute()) - want) < 1e-12


def test_auroc_matches_torchmetrics_with_ties():
    for seed in range(3):
        conf, correct = _data(seed)
        tied = (conf * 20).round() / 20  # many ties
        for x in (conf, tied):
            assert abs(float(confidence_auroc(x, correct)) - float(binary_auroc(x, correct))) < 1e-6
    assert float(confidence_auroc(torch.tensor([0.2, 0.4]), torch.tensor([1, 1]))) == 0.0


def test_binned_auroc_is_exact_auroc_of_binned_confidences():
    conf, correct = _data(7, n=800)
    for n_bins in (10, 100):
        m = ConfidenceAUROC(n_bins=n_bins)
        for sl in (slice(0, 300), slice(300, 800)):
            m.update(conf[sl], correct[sl])
        binned = (conf.double() * n_bins).floor().clamp(max=n_bins - 1) / n_bins
        assert abs(float(m.compute()) - float(binary_auroc(binned, correct))) < 1e-6
    fine = ConfidenceAUROC()  # default 10_000 bins: close to the exact value
    fine.update(conf, correct)
    assert abs(float(fine.compute()) - float(binary_auroc(conf, correct))) < 1e-3


def test_sequence_confidence_kinds_match_loop():
    g = torch.Generator().manual_seed(8)
    logp = -torch.rand(5, 7, generator=g) * 3
    mask = torch.arange(7).expand(5, 7) < torch.tensor([[7], [1], [4], [6], [3]])
    for kind in ("mean_logprob", "sum_logprob", "min_prob"):
        got = sequence_confidence(logp, mask, kind=kind)
        for i in range(5):
            vals = [float(logp[i, t]) for t in range(7) if mask[i, t]]
            want = {
                "mean_logprob": np.exp(np.mean(vals)),
                "sum_logprob": np.exp(np.sum(vals)),
                "min_prob": np.min(np.exp(vals)),
            }[kind]
            assert abs(float(got[i]) - want) < 1e-6, kind
    with pytest.raises(ValueError, match="kind must be one of"):
        sequence_confidence(logp, mask, kind="max")


def test_bad_confidences_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(torch.tensor([1.5]), torch.tensor([1]))
    with pytest.raises(ValueError, match="n_bins"):
        CalibrationError(n_bins=0)
