"""The RolloutDataModule under a real Trainer: no prefetch by default, epochs end with the data, checkpointed state."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.rewards import ExactMatchReward


class _Probe(pl.LightningModule):
    """Pulls one rollout batch per step and records what the DataModule had done before the pull."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.automatic_optimization = False
        self.seen: list[tuple[int, int, int]] = []

    def on_train_start(self):
        self.trainer.datamodule.engine.update_weights(self.policy)

    def training_step(self, dataloader_iter):
        dm = self.trainer.datamodule
        before = dm.step
        batch, _batch_idx, _dataloader_idx = next(dataloader_iter)  # Lightning yields a triple
        self.seen.append((before, dm.step, len(batch)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.policy.parameters(), lr=0.0)


def test_trainer_pulls_one_batch_per_step(tmp_path, tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = RolloutDataModule(
        tokenizer=tokenizer_dir,
        train_files=arithmetic_jsonl,
        prompts_per_step=4,
        num_generations=2,
        max_new_tokens=2,
        engine=HFEngine(),
        rewards=[ExactMatchReward()],
    )
    probe = _Probe(tiny_model)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(probe, datamodule=dm)
    # nothing generated ahead of the step that uses it; each Lightning epoch is one data epoch
    assert probe.seen == [(k, k + 1, 8) for k in range(6)]
    assert trainer.current_epoch == 2 and dm.epoch == 2
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["RolloutDataModule"]["step"] == 6
