"""Pieces of ``RolloutDataModule`` that stand on their own: the training iterable, the checks of its sizes and the
report of prompts dropped for their length."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset

from rlvr_lightning.data.types import RolloutBatch

__all__ = ["RolloutStream", "check_sizes", "report_overlong"]


class RolloutStream(IterableDataset):
    """Iterates the remaining steps of the current data epoch of a ``RolloutDataModule``, generating each batch on
    demand.

    The engine sleeps once a batch is made (vLLM frees the accelerator while the trainer works; a no-op for
    ``HFEngine``); it wakes for the next generation or weight sync.
    """

    def __init__(self, dm: Any) -> None:
        self.dm = dm

    def __iter__(self) -> Iterator[RolloutBatch]:
        dm = self.dm
        dm._ensure_ready()
        end = (dm.step // dm.steps_per_epoch + 1) * dm.steps_per_epoch
        while dm.step < end:
            batch = dm.next_batch()
            dm.engine.sleep()
            yield batch


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
