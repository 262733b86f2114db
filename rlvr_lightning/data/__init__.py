"""Data side of rlvr-lightning: prompt sources, rollout engines and the ``RolloutDataModule``.

The reward functions live in :mod:`rlvr_lightning.rewards`; the ones named here are re-exported from there.
"""

from rlvr_lightning.data.collate import collate_samples
from rlvr_lightning.data.datamodule import RolloutDataModule
from rlvr_lightning.data.hf_engine import HFEngine
from rlvr_lightning.data.prompts import PromptFormatError, PromptRecord, format_prompts, load_records
from rlvr_lightning.data.types import RolloutBatch, RolloutEngine, Sample, SamplingConfig, concat_batches
from rlvr_lightning.rewards import (
    ExactMatchReward,
    MathVerifyReward,
    extract_last_number,
    resolve_reward,
    score_completions,
)

__all__ = [
    "ExactMatchReward",
    "HFEngine",
    "MathVerifyReward",
    "PromptFormatError",
    "PromptRecord",
    "RolloutBatch",
    "RolloutDataModule",
    "RolloutEngine",
    "Sample",
    "SamplingConfig",
    "collate_samples",
    "concat_batches",
    "extract_last_number",
    "format_prompts",
    "load_records",
    "resolve_reward",
    "score_completions",
]
