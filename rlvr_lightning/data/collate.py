"""Turning engine samples and reward values into a ``RolloutBatch``: reward combination and padding.

Shapes: P prompts, B sequences, Tp prompt tokens, T response tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rlvr_lightning.data.rewards import accepts_keyword, reward_name
from rlvr_lightning.data.types import RolloutBatch, Sample

__all__ = ["collate_samples", "score_completions"]


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


def collate_samples(
    prompt_ids: Sequence[Sequence[int]],
    samples: Sequence[Sample],
    prompt_index: Sequence[int],
    scores: Sequence[float],
    *,
    pad_token_id: int,
) -> RolloutBatch:
    """Pad prompts (left) and responses (right) into a :class:`RolloutBatch` (text fields left empty).

    Args:
        prompt_ids: token ids of each of the P prompts.
        samples: the B generated samples.
        prompt_index: for each sample, the index of its prompt (becomes ``group_ids``), length B.
        scores: reward of each sample, length B.
        pad_token_id: the id that fills padding.
    """
    b = len(samples)
    tp = max(len(prompt_ids[i]) for i in prompt_index)
    t = max(1, max(len(s.token_ids) for s in samples))
    p_ids = torch.full((b, tp), pad_token_id, dtype=torch.long)
    p_mask = torch.zeros((b, tp), dtype=torch.bool)
    r_ids = torch.full((b, t), pad_token_id, dtype=torch.long)
    r_mask = torch.zeros((b, t), dtype=torch.bool)
    with_lp = all(s.logprobs is not None for s in samples)
    r_lp = torch.zeros((b, t), dtype=torch.float32) if with_lp else None
    for j, (i, s) in enumerate(zip(prompt_index, samples, strict=True)):
        p = prompt_ids[i]
        p_ids[j, tp - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        p_mask[j, tp - len(p) :] = True
        n = len(s.token_ids)
        r_ids[j, :n] = torch.tensor(s.token_ids, dtype=torch.long)
        r_mask[j, :n] = True
        if r_lp is not None:
            r_lp[j, :n] = torch.tensor(s.logprobs, dtype=torch.float32)
    return RolloutBatch(
        prompt_ids=p_ids,
        prompt_mask=p_mask,
        response_ids=r_ids,
        response_mask=r_mask,
        group_ids=torch.tensor(list(prompt_index), dtype=torch.long),
        scores=torch.tensor(list(scores), dtype=torch.float32),
        truncated=torch.tensor([s.finish_reason == "length" for s in samples], dtype=torch.bool),
        rollout_logprobs=r_lp,
    )
