"""torchmetrics metrics of rlvr-lightning: entropy, entropy dynamics, diversity, calibration, Pass@k, evaluation sets.

Every metric keeps fixed-size sum states (``dist_reduce_fx="sum"``), so accumulating over steps and
data-parallel ranks is exact; each has a functional twin in :mod:`rlvr_lightning.functional`. Metrics
returning several values return a dict from ``compute()``: log it with ``LightningModule.log_dict``. See
``docs/metrics.md``.
"""

from rlvr_lightning.metrics.accuracy import AvgAtKInterval, PassAtK
from rlvr_lightning.metrics.calibration import BrierScore, CalibrationError, ConfidenceAUROC
from rlvr_lightning.metrics.diversity import (
    ResponseDiversity,
    answer_classes,
    distinct_per_group,
    num_distinct_answers,
)
from rlvr_lightning.metrics.entropy import EntropyDynamics, TokenEntropy
from rlvr_lightning.metrics.evaluation import EvalMetrics, format_eval_table

__all__ = [
    "AvgAtKInterval",
    "BrierScore",
    "CalibrationError",
    "ConfidenceAUROC",
    "EntropyDynamics",
    "EvalMetrics",
    "PassAtK",
    "ResponseDiversity",
    "TokenEntropy",
    "answer_classes",
    "distinct_per_group",
    "format_eval_table",
    "num_distinct_answers",
]
