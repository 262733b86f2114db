"""Pieces of ``RolloutDataModule`` that stand on their own: the checks of its sizes, the report of prompts dropped
for their length, counts agreed over ranks and the checks of a resumed state (the training iterable is
``rlvr_lightning.data.prefetch.RolloutStream``)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["check_sizes", "global_count", "report_overlong", "warn_on_resume_mismatch"]


def check_sizes(**sizes: int) -> None:
    """Refuse a size below 1, naming it."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def report_overlong(dropped: int, total: int, max_prompt_length: int | None, what: str = "") -> None:
    """Warn that ``dropped`` of ``total`` prompts were over ``max_prompt_length`` tokens; refuse a set with none
    left."""
    prefix = f"{what}: " if what else ""
    if dropped:
        warnings.warn(f"{prefix}dropped {dropped} of {total} prompts longer than "
                      f"max_prompt_length={max_prompt_length} tokens")
    if dropped == total:
        raise ValueError(f"{prefix}no prompts left after dropping those over max_prompt_length={max_prompt_length}")


def global_count(trainer: Any, value: int, op: str) -> int:
    """``value`` summed (``"sum"``) or minimized (``"min"``) over the ranks of ``trainer`` (None: one process), so
    that every rank decides alike."""
    if trainer is None or trainer.world_size == 1:
        return value
    gathered = trainer.strategy.all_gather(torch.tensor([value], device=trainer.strategy.root_device))
    return int(gathered.sum() if op == "sum" else gathered.min())


def warn_on_resume_mismatch(state: dict[str, Any], seed: int, num_prompts: int | None) -> None:
    """Warn when a DataModule state is resumed with another seed or another number of training prompts."""
    if int(state.get("seed", seed)) != seed:
        warnings.warn(f"resuming with seed={seed} but the checkpoint used seed={state['seed']}")
    saved_n = int(state.get("num_prompts", -1))
    if saved_n >= 0 and num_prompts is not None and saved_n != num_prompts:
        warnings.warn(f"resuming with {num_prompts} training prompts; the checkpoint had {saved_n}")
