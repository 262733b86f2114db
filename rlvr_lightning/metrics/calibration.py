"""Calibration metrics of sequence confidence against correctness: ECE, Brier score and AUROC.

All states are fixed-size float64 sums reduced by ``sum`` across processes: ECE keeps per-bin sums of count,
confidence and correctness; Brier the sum of squared errors and the count; AUROC a histogram of the
confidences of correct and incorrect responses on a fine grid (``n_bins`` equal-width bins), so it is the
exact Mann-Whitney AUROC of the confidences rounded down to the grid (pairs in one bin count one half).
Confidences come from :func:`rlvr_lightning.functional.sequence_confidence`. Shapes: N scored responses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from rlvr_lightning.functional.calibration import (
    _auroc_hist_compute,
    _auroc_hist_update,
    _brier_update,
    _check_conf,
    _ece_compute,
    calibration_bins,
)

__all__ = ["BrierScore", "CalibrationError", "ConfidenceAUROC"]


class _ConfidenceMetric(Metric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args

    def _check(self, confidences: Tensor, correct: Tensor) -> None:
        if self.validate_args:
            _check_conf(confidences, correct)


class CalibrationError(_ConfidenceMetric):
    """Expected calibration error (L1, equal-width bins), equal to torchmetrics' ``BinaryCalibrationError``.

    Functional twin: :func:`rlvr_lightning.functional.expected_calibration_error`.

    Args:
        n_bins: number of equal-width confidence bins.
        validate_args: check shapes and that confidences lie in [0, 1] (one device sync per update).

    Example:
        >>> m = CalibrationError(n_bins=10)
        >>> m.update(torch.tensor([0.9, 0.9]), torch.tensor([1, 0]))
        >>> m.update(torch.tensor([0.25, 0.35]), torch.tensor([0, 0]))
        >>> round(float(m.compute()), 4)
        0.35
    """

    higher_is_better = False

    def __init__(self, n_bins: int = 15, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.n_bins = n_bins
        self.add_state("bins", default=torch.zeros(3, n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, confidences: Tensor, correct: Tensor) -> None:
        """Add responses: ``confidences`` in [0, 1] and ``correct`` (bool or 0/1), each shape ``(N,)``."""
        self._check(confidences, correct)
        self.bins += calibration_bins(confidences, correct, n_bins=self.n_bins).to(self.bins.device)

    def compute(self) -> Tensor:
        """The ECE of everything added (NaN before any update)."""
        return _ece_compute(self.bins)


class BrierScore(_ConfidenceMetric):
    """Mean squared error of confidence against correctness. Functional twin: ``brier_score``.

    Example:
        >>> m = BrierScore()
        >>> m.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 1]))
        >>> round(float(m.compute()), 4)
        0.325
    """

    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", default=torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, confidences: Tensor, correct: Tensor) -> None:
        """Add responses: ``confidences`` in [0, 1] and ``correct`` (bool or 0/1), each shape ``(N,)``."""
        self._check(confidences, correct)
        self.sums += _brier_update(confidences, correct).to(self.sums.device)

    def compute(self) -> Tensor:
        """The Brier score of everything added."""
        return self.sums[0] / self.sums[1]


class ConfidenceAUROC(_ConfidenceMetric):
    """AUROC of confidence as a predictor of correctness, from a fixed histogram state.

    The confidences are binned on ``n_bins`` equal-width bins of [0, 1]; the result is the exact AUROC of the
    binned values (ties count one half), within about ``1 / n_bins`` of the unbinned
    :func:`rlvr_lightning.functional.confidence_auroc`. Confidences of a collapsed policy crowd near 1, hence
    the fine default grid. 0 when only one class has been seen (as torchmetrics).

    Args:
        n_bins: histogram resolution.

    Example:
        >>> m = ConfidenceAUROC(n_bins=100)
        >>> m.update(torch.tensor([0.1, 0.5, 0.5, 0.7]), torch.tensor([0, 1, 0, 1]))
        >>> float(m.compute())
        0.875
    """

    higher_is_better = True

    def __init__(self, n_bins: int = 10_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.n_bins = n_bins
        self.add_state("hist", default=torch.zeros(2, n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, confidences: Tensor, correct: Tensor) -> None:
        """Add responses: ``confidences`` in [0, 1] and ``correct`` (bool or 0/1), each shape ``(N,)``."""
        self._check(confidences, correct)
        self.hist += _auroc_hist_update(confidences, correct, n_bins=self.n_bins).to(self.hist.device)

    def compute(self) -> Tensor:
        """The binned AUROC of everything added."""
        return _auroc_hist_compute(self.hist)
