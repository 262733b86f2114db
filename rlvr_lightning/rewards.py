"""Public reward functions: ``from rlvr_lightning.rewards import MathVerifyReward``.

A reward is a plain callable ``(completions: list[str], answers: list[str], **kw) -> list[float]``; see
:mod:`rlvr_lightning.data.rewards` for the built-ins.
"""

from rlvr_lightning.data.rewards import (
    ExactMatchReward,
    MathVerifyReward,
    TimeLimitedReward,
    extract_last_number,
    resolve_reward,
)

__all__ = ["ExactMatchReward", "MathVerifyReward", "TimeLimitedReward", "extract_last_number", "resolve_reward"]
