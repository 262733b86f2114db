"""A callback for the study runs: distinct correct answers every step, and the entropy probe every k steps.

It wraps the module's ``training_step`` (the module itself is unchanged) so that it sees each rollout batch:

* ``train/distinct_correct``: mean over the batch's prompt groups of the number of distinct correct responses
  (:func:`rlvr_lightning.study_task.distinct_correct`, correct meaning score >= ``model.correct_threshold``);
* every ``probe_every`` rollout batches (0: never), :func:`rlvr_lightning.entropy_probe.entropy_probe` around the
  step's updates: ``train/entropy_change_measured``, ``train/entropy_change_predicted``,
  ``train/entropy_drive_pos``, ``train/entropy_drive_neg`` (and ``train/entropy_probe_update_norm``).

Use it from a config::

    trainer:
      callbacks:
        - class_path: rlvr_lightning.study_callback.StudyMetrics
          init_args: {probe_every: 10}
"""

from __future__ import annotations

import types
from typing import Any, Iterator

import torch
from lightning.pytorch import Callback

from rlvr_lightning.entropy_probe import entropy_probe
from rlvr_lightning.study_task import distinct_correct


class StudyMetrics(Callback):
    """Log distinct correct answers per group every step and the entropy probe every ``probe_every`` steps."""

    def __init__(self, probe_every: int = 0) -> None:
        if probe_every < 0:
            raise ValueError(f"probe_every must be >= 0, got {probe_every}")
        self.probe_every = probe_every

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or getattr(pl_module, "_study_metrics_wrapped", False):
            return
        original = pl_module.training_step

        def training_step(module: Any, dataloader_iter: Iterator[Any]) -> None:
            self._run(module, original, next(dataloader_iter))

        # a bound method, so that Lightning still sees the `dataloader_iter` argument after `self`
        pl_module.training_step = types.MethodType(training_step, pl_module)
        pl_module._study_metrics_wrapped = True

    def _run(self, module: Any, original: Any, item: Any) -> None:
        batch = item[0]
        once = iter([item])
        threshold = module.hparams.correct_threshold
        logs = {"train/distinct_correct": distinct_correct(
            batch.completions, [float(s) >= threshold for s in batch.scores.tolist()], batch.group_ids.tolist())}
        k = self.probe_every
        if k and module.rollout_step % k == 0:
            on_device = batch.to(module.device)
            advantages = module.advantage(on_device.scores, on_device.group_ids, on_device.response_mask)
            out = entropy_probe(module.policy, on_device, advantages, lambda: original(once),
                                temperature=module._sampling_temperature())
            for key in ("entropy_change_measured", "entropy_change_predicted", "entropy_drive_pos",
                        "entropy_drive_neg"):
                logs[f"train/{key}"] = float(out[key])
            logs["train/entropy_probe_update_norm"] = float(out["update_norm"])
        else:
            original(once)
        for key, value in logs.items():
            module.log(key, torch.tensor(float(value)), on_step=True, on_epoch=False, batch_size=len(batch))


__all__ = ["StudyMetrics"]
