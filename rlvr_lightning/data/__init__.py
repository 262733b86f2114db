"""Data side of rlvr-lightning: prompt sources, rollout engines, reward functions and the ``RolloutDataModule``.

Names are imported on first use, so that ``rlvr_lightning.data.rewards`` (loaded by the reward worker processes)
does not pull in torch, transformers or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RolloutDataModule": "datamodule",
    "HFEngine": "engines",
    "PromptFormatError": "prompts",
    "PromptRecord": "prompts",
    "format_prompts": "prompts",
    "load_records": "prompts",
    "ExactMatchReward": "rewards",
    "MathVerifyReward": "rewards",
    "extract_last_number": "rewards",
    "resolve_reward": "rewards",
    "RolloutBatch": "types",
    "RolloutEngine": "types",
    "Sample": "types",
    "SamplingConfig": "types",
    "concat_batches": "types",
    "collate_samples": "collate",
    "score_completions": "collate",
}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"rlvr_lightning.data.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlvr_lightning.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
