"""A tiny Lightning fit that logs the same per-rank values through ``self.log`` (keys ``a/...``) and through
``rlvr_lightning.step_log.publish`` (keys ``b/...``), run by ``test_publish.py`` in 1 or 2 processes (DDP, gloo).

Usage: ``python publish_probe.py OUT_DIR DEVICES``; rank 0 writes ``OUT_DIR/result.json`` with the trainer's
callback, logged and progress-bar metrics; the CSV log is under ``OUT_DIR/log``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

from rlvr_lightning.step_log import publish


class Probe(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        r, s = float(self.global_rank), float(batch_idx)
        values = {"x": torch.tensor(r + s), "length_max": torch.tensor(10.0 * r - s), "lr": 0.25 * s}
        for k, v in values.items():  # the reference: Lightning's own path
            self.log(f"a/{k}", v, on_step=True, on_epoch=False, prog_bar=k == "x", sync_dist=True,
                     reduce_fx="max" if k.endswith("_max") else "mean")
        publish(self.trainer, {f"b/{k}": v for k, v in values.items()}, prog_bar=("b/x",))
        return (self.w**2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.zeros(5, 1), batch_size=1)


def main(out: Path, devices: int) -> None:
    trainer = Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=2,
                      log_every_n_steps=2, logger=CSVLogger(str(out / "log"), name="probe"),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Probe())
    if trainer.global_rank == 0:
        as_floats = lambda d: {k: float(v) for k, v in d.items()}  # noqa: E731
        (out / "result.json").write_text(json.dumps({
            "callback": as_floats(trainer.callback_metrics), "logged": as_floats(trainer.logged_metrics),
            "pbar": as_floats(trainer.progress_bar_metrics)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
