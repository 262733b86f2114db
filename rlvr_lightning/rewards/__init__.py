"""Reward functions: plain callables ``(completions: list[str], answers: list[str], **kw) -> list[float]``.

Built in: :class:`MathVerifyReward` (math-verify in worker processes, with a time limit per completion),
:class:`ExactMatchReward`, and :class:`TimeLimitedReward`, which runs any reward of one's own in a worker process
with a time limit. :func:`score_completions` combines several rewards into one weighted score per completion;
:func:`answer_classes` groups equivalent final answers with the same time-limited math-verify checker.

This package imports neither torch nor the rest of rlvr-lightning (only the standard-library-only
``rlvr_lightning.quiet``), so that its worker processes start fast. Worker processes start the same from any
context (a script with or without a main guard, ``python -c``, ``python -``, a thread, a notebook): see
:mod:`rlvr_lightning.rewards.workers`.
"""

from rlvr_lightning.rewards.combine import resolve_rewards, score_completions
from rlvr_lightning.rewards.exact_match import ExactMatchReward, extract_last_number
from rlvr_lightning.rewards.math_verify import AnswerEquivalence, MathVerifyReward, answer_classes
from rlvr_lightning.rewards.resolve import accepts_keyword, resolve_reward, reward_name
from rlvr_lightning.rewards.time_limited import TimeLimitedReward

__all__ = [
    "AnswerEquivalence",
    "ExactMatchReward",
    "MathVerifyReward",
    "TimeLimitedReward",
    "accepts_keyword",
    "answer_classes",
    "extract_last_number",
    "resolve_reward",
    "resolve_rewards",
    "reward_name",
    "score_completions",
]
