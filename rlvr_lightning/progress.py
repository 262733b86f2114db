"""``RolloutProgressBar``: Lightning's TQDM progress bar, counting rollout batches over the whole run.

Lightning's default bar counts the batches of one epoch and titles it "Epoch e/max_epochs-1", which reads
"Epoch 4/-2" for an RLVR run (``max_epochs: -1``; a data epoch is one pass over the prompts, the run's length is
``max_steps`` optimizer steps). This bar instead shows rollout batches trained so far out of the run's total, e.g.
``rollout steps (data epoch 2) 120/500``: one bar over the run that does not restart at each data epoch and
starts where a resumed run left off. The ``rlvr`` command uses it whenever the progress bar is on and no other
progress bar is configured. Validation and test bars are Lightning's.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["RolloutProgressBar", "total_rollout_steps"]


def total_rollout_steps(trainer: pl.Trainer, module: pl.LightningModule) -> int | None:
    """The run's rollout batches: ``ceil(max_steps / N)`` with N optimizer steps per rollout batch, else
    ``max_epochs`` data epochs of rollout batches; None when neither bounds the run."""
    hp = getattr(module, "hparams", {})
    updates = int(hp.get("ppo_epochs", 1)) * int(hp.get("num_mini_batches", 1))
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return math.ceil(trainer.max_steps / max(1, updates))
    per_epoch = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and math.isfinite(per_epoch):
        return int(trainer.max_epochs * per_epoch)
    return None


class RolloutProgressBar(TQDMProgressBar):
    """A TQDM bar of rollout batches (``module.rollout_step``) out of :func:`total_rollout_steps`.

    Args:
        refresh_rate: update the bar every this many rollout batches.
        process_position: as in Lightning's ``TQDMProgressBar``.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.total = total_rollout_steps(trainer, pl_module)
        bar.set_description(f"rollout steps (data epoch {trainer.current_epoch})")
        self._show(bar, getattr(pl_module, "rollout_step", 0))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        n = getattr(pl_module, "rollout_step", batch_idx + 1)
        if bar is not None and bar.n != n and self._should_update(n, bar.total):
            self._show(bar, n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    @staticmethod
    def _show(bar: Any, n: int) -> None:
        if not bar.disable:
            bar.n = n
            bar.refresh()
