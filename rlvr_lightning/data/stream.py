"""Pieces of ``RolloutDataModule`` that stand on their own: the checks of its sizes and the report of prompts dropped
for their length (the training iterable is ``rlvr_lightning.data.prefetch.RolloutStream``)."""

from __future__ import annotations

import warnings

__all__ = ["check_sizes", "report_overlong"]


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
