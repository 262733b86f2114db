"""Several reward functions: resolved from their specs, and combined into one score per completion."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from rlvr_lightning.rewards.resolve import accepts_keyword, resolve_reward, reward_name

__all__ = ["resolve_rewards", "score_completions"]

RewardSpec = Callable[..., list[float]] | str


def resolve_rewards(
    rewards: Sequence[RewardSpec] | RewardSpec, weights: Sequence[float] | None = None
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """The reward callables (see :func:`resolve_reward`) and one weight for each (None: all 1).

    Raises:
        ValueError: no reward, a reward that cannot be imported, or a number of weights that does not match.
    """
    fns = [resolve_reward(r) for r in (rewards if isinstance(rewards, list) else [rewards])]
    if not fns:
        raise ValueError("rewards is empty; give at least one reward function")
    if weights is not None and len(weights) != len(fns):
        raise ValueError(f"reward_weights has {len(weights)} entries for {len(fns)} rewards")
    return fns, list(weights) if weights is not None else [1.0] * len(fns)


def score_completions(
    completions: list[str],
    answers: list[str],
    reward_fns: Sequence[Callable[..., list[float]]],
    *,
    weights: Sequence[float],
    prompts: list[str] | None = None,
    strict: bool = False,
) -> tuple[list[float], dict[str, float]]:
    """The weighted sum of every reward function's scores, with counters for logging.

    A reward function that raises (or returns the wrong number of values) scores the whole batch 0, counts in
    ``reward/errors`` and warns with the exception, unless ``strict``; a NaN or infinite score becomes 0 and counts
    in ``reward/nonfinite``. A function gets ``prompts=`` when its signature accepts it. Counters a
    function leaves in ``last_stats`` are reported as ``reward/<name>/<key>``; ``timeouts`` and ``unparsed`` are
    also summed into ``reward/timeouts`` and ``reward/unparsed``.

    Returns:
        ``(scores (length B), info)``.
    """
    total = np.zeros(len(completions), dtype=np.float64)
    info: dict[str, float] = {"reward/errors": 0.0, "reward/timeouts": 0.0, "reward/unparsed": 0.0}
    for fn, w in zip(reward_fns, weights, strict=True):
        name = reward_name(fn)
        try:
            kwargs = {"prompts": prompts} if prompts is not None and accepts_keyword(fn, "prompts") else {}
            values = np.asarray(fn(completions, answers, **kwargs), dtype=np.float64)
            if values.shape != (len(completions),):
                raise ValueError(
                    f"reward {name} returned shape {values.shape}, expected ({len(completions)},)"
                )
        except Exception as err:
            if strict:
                raise
            warnings.warn(f"reward {name} raised {type(err).__name__}: {err}; its scores for this batch are 0 "
                          f"(data.strict_rewards=true stops the run instead)", RuntimeWarning, stacklevel=2)
            info["reward/errors"] += 1.0
            values = np.zeros(len(completions))
        bad = ~np.isfinite(values)
        if bad.any():  # a NaN or infinite score would poison the advantages of its whole group
            if strict:
                raise ValueError(f"reward {name} returned {int(bad.sum())} non-finite scores")
            info["reward/nonfinite"] = info.get("reward/nonfinite", 0.0) + float(bad.sum())
            values = np.where(bad, 0.0, values)
        stats = getattr(fn, "last_stats", None) or {}
        for k, v in stats.items():
            info[f"reward/{name}/{k}"] = float(v)
        info["reward/timeouts"] += float(stats.get("timeouts", 0))
        info["reward/unparsed"] += float(stats.get("unparsed", 0))
        info[f"reward/{name}/mean"] = float(values.mean()) if len(values) else 0.0
        total += w * values
    return total.tolist(), info
