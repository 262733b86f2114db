"""What to do with rollout groups whose rewards are all equal (zero advantage: no learning signal).

``RolloutDataModule(zero_variance_groups=...)`` picks one: ``"keep"`` them, ``"skip_batch"`` (draw the next step's
prompts while no group of the batch has signal) or ``"resample"`` (DAPO-style dynamic sampling: draw further
steps' prompts until the batch holds ``prompts_per_step`` groups with signal, filling up with zero-variance groups
when the bound is reached, so the batch size never changes). Decisions use counts over all ranks, so every rank
draws the same number of rollouts. Shapes: B sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvr_lightning.data.types import RolloutBatch, concat_batches
from rlvr_lightning.functional.groups import group_stats

Draw = Callable[[], RolloutBatch]
GlobalCount = Callable[[int, str], int]  # (value, "sum" | "min") -> the value reduced over ranks


def skip_batches_without_signal(
    batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, max_extra: int
) -> RolloutBatch:
    """``batch``, or a later one from ``draw`` (at most ``max_extra`` more) if no rank's batch has signal."""
    rounds: list[RolloutBatch] = []
    while len(rounds) < max_extra and global_count(len(signal_groups(batch)), "sum") == 0:
        rounds.append(batch)
        batch = draw()
    batch.info = {
        **merge_info([*rounds, batch]),
        "dynamic/extra_rollouts": float(len(rounds)),
        "dynamic/dropped_groups": float(sum(len(group_list(b)) for b in rounds)),
        "dynamic/filled_groups": 0.0,
    }
    return batch


def resample_groups_without_signal(
    batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, need: int, max_extra: int
) -> RolloutBatch:
    """``need`` groups, those with signal first, from ``batch`` and up to ``max_extra`` further draws."""
    rounds = [batch]
    found = len(signal_groups(batch))
    while global_count(found, "min") < need and len(rounds) <= max_extra:
        rounds.append(draw())
        found += len(signal_groups(rounds[-1]))
    pieces = [(b, g) for b in rounds for g in signal_groups(b)][:need]
    with_signal = set(signal_groups(batch))
    flat = [(batch, g) for g in group_list(batch) if g not in with_signal]
    filled = flat[: need - len(pieces)]
    parts = []
    for k, (b, g) in enumerate(pieces + filled):
        part = b.select(torch.nonzero(b.group_ids == g).flatten())
        part.group_ids = torch.full_like(part.group_ids, k)
        part.info = {}
        parts.append(part)
    out = concat_batches(parts)
    out.info = {
        **merge_info(rounds),
        "dynamic/extra_rollouts": float(len(rounds) - 1),
        "dynamic/dropped_groups": float(sum(len(group_list(b)) for b in rounds) - len(pieces)),
        "dynamic/filled_groups": float(len(filled)),
    }
    return out


def group_list(batch: RolloutBatch) -> list[int]:
    """The group ids present in ``batch``, sorted."""
    return [int(g) for g in torch.unique(batch.group_ids)]


def signal_groups(batch: RolloutBatch) -> list[int]:
    """Ids of the groups whose scores are not all equal (the ones with a non-zero advantage), in order."""
    stats = group_stats(batch.scores, batch.group_ids)
    return [int(g) for g in stats.ids[~stats.equal]]


def merge_info(batches: list[RolloutBatch]) -> dict[str, float]:
    """Counters and timings of several rollouts summed; per-reward means (``.../mean``) averaged."""
    info: dict[str, float] = {}
    for b in batches:
        for k, v in (b.info or {}).items():
            info[k] = info.get(k, 0.0) + float(v)
    return {k: v / len(batches) if k.endswith("/mean") else v for k, v in info.items()}
