"""What to do with rollout groups whose rewards are all equal (zero advantage: no learning signal).

``RolloutDataModule(zero_variance_groups=...)`` picks a :class:`ZeroVariancePolicy` by name or import path:
``"keep"`` them (:class:`KeepGroups`), ``"skip_batch"`` (:class:`SkipBatch`: draw the next step's prompts while no
group of the batch has signal) or ``"resample"`` (:class:`ResampleGroups`, DAPO-style dynamic sampling: draw further
steps' prompts until the batch holds ``prompts_per_step`` groups with signal, filling up with zero-variance groups
when the bound is reached, so the batch size never changes). Decisions use counts over all ranks, so every rank
draws the same number of rollouts. Shapes: B sequences.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from rlvr_lightning.data.types import RolloutBatch, concat_batches
from rlvr_lightning.functional.groups import group_stats

Draw = Callable[[], RolloutBatch]
GlobalCount = Callable[[int, str], int]  # (value, "sum" | "min") -> the value reduced over ranks


class ZeroVariancePolicy:
    """What becomes of a rollout batch's groups without reward variance; a subclass is chosen by import path."""

    def __call__(
        self, batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, need: int, max_extra: int
    ) -> RolloutBatch:
        """The training batch made from ``batch``.

        Args:
            batch: the step's rollouts.
            draw: rolls out the next step's prompts (advancing the prompt stream).
            global_count: reduces a count over ranks, so that every rank decides alike.
            need: groups per batch on this rank.
            max_extra: the most extra calls of ``draw``.
        """
        raise NotImplementedError


class KeepGroups(ZeroVariancePolicy):
    """``"keep"``: the batch as it is."""

    def __call__(
        self, batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, need: int, max_extra: int
    ) -> RolloutBatch:
        return batch


class SkipBatch(ZeroVariancePolicy):
    """``"skip_batch"``: see :func:`skip_batches_without_signal`."""

    def __call__(
        self, batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, need: int, max_extra: int
    ) -> RolloutBatch:
        return skip_batches_without_signal(batch, draw, global_count, max_extra=max_extra)


class ResampleGroups(ZeroVariancePolicy):
    """``"resample"``: see :func:`resample_groups_without_signal`."""

    def __call__(
        self, batch: RolloutBatch, draw: Draw, global_count: GlobalCount, *, need: int, max_extra: int
    ) -> RolloutBatch:
        return resample_groups_without_signal(batch, draw, global_count, need=need, max_extra=max_extra)


ZERO_VARIANCE_POLICIES: dict[str, type[ZeroVariancePolicy]] = {
    "keep": KeepGroups,
    "skip_batch": SkipBatch,
    "resample": ResampleGroups,
}


def zero_variance_policy(spec: str | ZeroVariancePolicy) -> ZeroVariancePolicy:
    """The policy named ``spec`` (a key of ``ZERO_VARIANCE_POLICIES`` or the import path of a subclass)."""
    if isinstance(spec, ZeroVariancePolicy):
        return spec
    if spec in ZERO_VARIANCE_POLICIES:
        return ZERO_VARIANCE_POLICIES[spec]()
    if isinstance(spec, str) and "." in spec:
        module, _, name = spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, ZeroVariancePolicy):
            return cls()
    raise ValueError(
        f"zero_variance_groups must be 'keep', 'skip_batch' or 'resample' (or the import path of a "
        f"ZeroVariancePolicy subclass), got {spec!r}"
    )


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
