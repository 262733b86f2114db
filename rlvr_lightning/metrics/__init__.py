"""torchmetrics metrics of rlvr-lightning: entropy, entropy dynamics, diversity, calibration and Pass@k.

Every metric keeps fixed-size sum states (``dist_reduce_fx="sum"``), so accumulating over steps and
data-parallel ranks is exact; each has a functional twin in :mod:`rlvr_lightning.functional`. Metrics
returning several values return a dict from ``compute()``: log it with ``LightningModule.log_dict``. See
``docs/metrics.md``.
"""

from rlvr_lightning.metrics.accuracy import PassAtK
from rlvr_lightning.metrics.calibration import BrierScore, CalibrationError, ConfidenceAUROC
from rlvr_lightning.metrics.diversity import ResponseDiversity, answer_classes, num_distinct_answers
from rlvr_lightning.metrics.entropy import EntropyDynamics, TokenEntropy

__all__ = [
    "BrierScore",
    "CalibrationError",
    "ConfidenceAUROC",
    "EntropyDynamics",
    "PassAtK",
    "ResponseDiversity",
    "TokenEntropy",
    "answer_classes",
    "num_distinct_answers",
]
