"""The contract between RLVRModule and its DataModule (``RolloutSource``): the module reads nothing else, a
DataModule without it is refused by name, the engine sleeps after every rollout, the temperature travels with the
batch."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from toy_training import REPO, digit_reward

import rlvr_lightning.module as module_file
from rlvr_lightning import functional as F
from rlvr_lightning.components import EntropyGuidedPAR
from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.data.types import RolloutSource, concat_batches, missing_members
from rlvr_lightning.module import RLVRModule
from rlvr_lightning.scoring import sequence_logprobs

TINY = str(REPO / "assets" / "tiny-qwen2")
CONTRACT = {"prompts_per_step", "num_generations", "eval_sets", "steps_per_epoch", "epoch", "sync_weights",
            "eval_rollout", "prefetched"}
READ_BY_MODULE: set[str] = set()


class _RecordingDataModule(RolloutDataModule):
    """A RolloutDataModule that notes every attribute read from it by code in ``rlvr_lightning/module.py``."""

    def __getattribute__(self, name: str) -> Any:
        if sys._getframe(1).f_code.co_filename == module_file.__file__:
            READ_BY_MODULE.add(name)
        return super().__getattribute__(name)


class _SleepCountingEngine(HFEngine):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    def sleep(self) -> None:
        self.sleeps += 1


def _data(cls: type = RolloutDataModule, **kw: Any) -> RolloutDataModule:
    return cls(tokenizer=TINY, train_files=str(REPO / "assets/arithmetic/train.jsonl"),
               val_files=str(REPO / "assets/arithmetic/val.jsonl"), prompt_template="{prompt}", prompts_per_step=2,
               num_generations=2, max_new_tokens=4, max_prompt_length=32, rewards=[digit_reward], **kw)


def _trainer(tmp_path, max_steps: int = 2) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      limit_val_batches=1, num_sanity_val_steps=0)


def _module(**kw: Any) -> RLVRModule:
    return RLVRModule(TINY, from_scratch=True, reweight=EntropyGuidedPAR(), **kw)


def test_the_protocol_names_exactly_what_the_module_may_read():
    assert set(missing_members(None, RolloutSource)) == CONTRACT
    assert missing_members(_data(), RolloutSource) == []


def test_fit_and_validate_read_only_the_contract(tmp_path):
    READ_BY_MODULE.clear()
    dm = _data(_RecordingDataModule)
    module = _module()
    trainer = _trainer(tmp_path)
    trainer.fit(module, dm)
    trainer.validate(module, dm)
    assert module.rollout_step == 2 and "val" in module.last_eval
    assert READ_BY_MODULE <= CONTRACT, READ_BY_MODULE - CONTRACT
    assert {"sync_weights", "eval_rollout", "epoch", "prompts_per_step", "prefetched"} <= READ_BY_MODULE


def test_a_datamodule_without_the_contract_is_refused_by_name(tmp_path):
    class Prompts(pl.LightningDataModule):
        prompts_per_step, num_generations = 4, 2

        def train_dataloader(self) -> list:
            return []

    lacks = "lacks epoch, eval_rollout, eval_sets, prefetched, steps_per_epoch, sync"
    with pytest.raises(TypeError, match=f"RolloutSource.*{lacks}"):
        _trainer(tmp_path).fit(_module(), Prompts())
    with pytest.raises(TypeError, match="RolloutSource.*got none"):
        _trainer(tmp_path).fit(_module(), train_dataloaders=[])


def test_the_engine_sleeps_after_every_rollout():
    engine = _SleepCountingEngine()
    dm = _data(engine=engine)
    from rlvr_lightning.models import load_causal_lm

    dm.sync_weights(load_causal_lm(TINY, from_scratch=True, seed=0))
    stream = iter(dm.train_dataloader())
    next(stream)
    assert engine.sleeps == 1
    next(stream)
    assert engine.sleeps == 2
    loader = dm.val_dataloader()
    rollout = dm.eval_rollout(next(iter(loader)), 0)
    assert engine.sleeps == 3 and len(rollout) == len(next(iter(loader))["prompts"]) * loader.eval_set.k


def test_the_temperature_travels_with_the_batch_and_greedy_is_scored_at_one():
    from rlvr_lightning.models import load_causal_lm

    dm = _data(temperature=0.7)
    policy = load_causal_lm(TINY, from_scratch=True, seed=0)
    dm.sync_weights(policy)
    recs = dm.train_prompts[:2]
    batch = dm.rollout(recs, n=2, seed=0)
    assert batch.temperature == 0.7 and batch.select([0, 1]).temperature == 0.7
    assert concat_batches([batch, batch]).temperature == 0.7
    greedy = dm.rollout(recs, n=1, seed=0, temperature=0.0)
    assert greedy.temperature == 0.0
    logp = sequence_logprobs(policy, greedy, with_entropy=False, grad=False)[0]
    input_ids, attention_mask, position_ids = greedy.model_inputs()
    T = greedy.response_ids.shape[1]
    logits = policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    expected = F.logprobs_from_logits(logits[:, -(T + 1):-1], greedy.response_ids, temperature=1.0)
    torch.testing.assert_close(logp, expected)
    warm = sequence_logprobs(policy, batch, with_entropy=False, grad=False)[0]
    batch.temperature = 1.0
    assert not torch.allclose(warm, sequence_logprobs(policy, batch, with_entropy=False, grad=False)[0])
