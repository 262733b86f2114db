"""Non-finite updates: ``RLVRModule`` skips an update whose loss or gradient is NaN or infinite, counts it, and
stops the run (after saving ``nonfinite.ckpt``) when too many come in a row."""

from __future__ import annotations

import os
from typing import Any, Callable

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive updates with a NaN or infinite loss or gradient."""


class NonFiniteCounter:
    """Counts skipped updates, in all and in a row, and stops a run when ``max_consecutive`` come in a row.

    Args:
        max_consecutive: the most consecutive non-finite updates before :class:`NonFiniteLossError`.
    """

    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.total = 0
        self.streak = 0

    def record(self, finite: bool, loss: Tensor, grad_norm: Tensor, save_checkpoint: Callable[[], str]) -> None:
        """Note one update; warn on a non-finite one, and raise once the streak reaches ``max_consecutive``.

        Args:
            finite: whether the update was taken (on every rank).
            loss: the update's loss (a 0-dim tensor), quoted in the messages.
            grad_norm: the gradient norm before clipping (a 0-dim tensor), quoted in the messages.
            save_checkpoint: saves the state before stopping and says where (or why not).
        """
        if finite:
            self.streak = 0
            return
        self.total += 1
        self.streak += 1
        rank_zero_warn(
            f"skipped an update with a non-finite loss or gradient (loss={float(loss)}, "
            f"grad_norm={float(grad_norm)}); {self.streak} in a row, {self.total} in all"
        )
        if self.streak >= self.max_consecutive:
            saved = save_checkpoint()
            raise NonFiniteLossError(
                f"{self.streak} consecutive updates had a non-finite loss or gradient "
                f"(loss={float(loss)}, grad_norm={float(grad_norm)}); stopping. Lower the learning "
                f"rate or check the rewards; model.max_consecutive_nonfinite sets the limit. {saved}"
            )


def save_nonfinite_checkpoint(trainer: Any) -> str:
    """Save ``nonfinite.ckpt`` in the run's checkpoint folder (the weights are still those of the last finite
    update) and say where, or why saving failed."""
    callback = trainer.checkpoint_callback
    folder = getattr(callback, "dirpath", None) or trainer.log_dir or trainer.default_root_dir
    path = os.path.join(folder, "nonfinite.ckpt")
    try:
        trainer.save_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - the run stops either way; do not hide the non-finite error
        return f"Saving a checkpoint failed: {type(err).__name__}: {err}"
    return f"The last finite state is saved in {path}."
