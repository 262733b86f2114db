"""Rollouts generated ahead of training (``rollout_ahead``): order, the weights each batch is sampled from, its
staleness, epochs, the fresh batches the trainer scores, and the queue's checkpoint state."""

from __future__ import annotations

import io

import pytest
import torch

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.data.prefetch import RolloutQueue
from rlvr_lightning.rewards import ExactMatchReward


class VersionEngine(HFEngine):
    """The HF engine noting, for every ``generate``, how many weight syncs came before it (the policy version)."""

    def __init__(self) -> None:
        super().__init__(batch_size=16)
        self.syncs = 0
        self.versions: list[int] = []

    def update_weights(self, policy: torch.nn.Module) -> None:
        super().update_weights(policy)
        self.syncs += 1

    def generate(self, prompt_token_ids, sampling, *, seed=None):
        self.versions.append(self.syncs - 1)
        return super().generate(prompt_token_ids, sampling, seed=seed)


def make_dm(tokenizer_dir, files, ahead: int) -> RolloutDataModule:
    return RolloutDataModule(tokenizer=tokenizer_dir, train_files=files, prompts_per_step=4, num_generations=2,
                             max_new_tokens=3, engine=VersionEngine(), rewards=[ExactMatchReward()], seed=3,
                             rollout_ahead=ahead)


def train(dm: RolloutDataModule, model: torch.nn.Module, epochs: int) -> list[tuple]:
    """What a trainer does with the stream: pull, note the batch and the fresh ones, sync its (new) weights."""
    dm.sync_weights(model)  # version 0, as RLVRModule.on_train_start
    seen = []
    for _ in range(epochs):
        for batch in dm.train_dataloader():
            seen.append((batch, dm.prefetched(), dm.epoch))
            dm.sync_weights(model)  # after the batch's updates: the next version
    return seen


@pytest.mark.parametrize("ahead", [1, 2])
def test_each_batch_comes_from_the_weights_ahead_versions_back(tokenizer_dir, tiny_model, arithmetic_jsonl, ahead):
    on_policy = train(make_dm(tokenizer_dir, arithmetic_jsonl, 0), tiny_model, epochs=2)
    dm = make_dm(tokenizer_dir, arithmetic_jsonl, ahead)
    seen = train(dm, tiny_model, epochs=2)
    # 12 prompts, 4 per step: two epochs of 3 batches, the same batches in the same order (the weights never change)
    assert len(seen) == len(on_policy) == 6
    for (got, _, _), (want, _, _) in zip(seen, on_policy):
        assert got.prompts == want.prompts and got.completions == want.completions
        assert torch.equal(got.response_ids, want.response_ids)
    # batch j is generated at pull max(0, j - ahead), from that version; handed out at pull j: staleness min(j, ahead)
    assert dm.engine.versions == [max(0, j - ahead) for j in range(6 + ahead)]
    assert [b.staleness for b, _, _ in seen] == [min(j, ahead) for j in range(6)]
    assert [b.staleness for b, _, _ in on_policy] == [0] * 6
    # the epoch of the next batch to hand out, though the prompt stream has run ahead into the next epoch
    assert [e for _, _, e in seen] == [0, 0, 1, 1, 1, 2] and dm.epoch == 2 and dm.step == 6 + ahead
    # the fresh batches of each pull are the ones it generated: all k at the first pull, one at each later pull
    assert [len(f) for _, f, _ in seen] == [ahead] + [1] * 5
    assert all(f[-1] is not b for b, f, _ in seen)


def test_the_queue_state_loads_weights_only_and_resumes_the_stream(tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = make_dm(tokenizer_dir, arithmetic_jsonl, 1)
    dm.sync_weights(tiny_model)
    it = iter(dm.train_dataloader())
    for _ in range(2):
        next(it)
        for b in dm.prefetched():  # what the trainer attaches (any (B, T) tensors do here)
            b.old_logprobs = -torch.rand(b.response_ids.shape, dtype=torch.float64)
            b.old_entropy = torch.rand(b.response_ids.shape)
    buffer = io.BytesIO()
    torch.save(dm.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain containers only, as Lightning checkpoints need
    expected = [next(it), next(iter(dm.train_dataloader()))]  # the last batch of epoch 0, the first of epoch 1
    assert state["step"] == 3 and state["rollouts"]["handed_out"] == 2 and len(state["rollouts"]["batches"]) == 1

    resumed = make_dm(tokenizer_dir, arithmetic_jsonl, 1)
    resumed.sync_weights(tiny_model)
    resumed.load_state_dict(state)
    assert resumed.prefetched() == [] and resumed.epoch == 0
    got = list(resumed.train_dataloader())
    assert len(got) == 1  # the rest of epoch 0: the queued batch; the next epoch's batch waits for the next iter()
    got.append(next(iter(resumed.train_dataloader())))
    for g, e in zip(got, expected):
        assert g.prompts == e.prompts and g.completions == e.completions and g.staleness == e.staleness == 1
        assert g.temperature == e.temperature
        assert {k: v for k, v in g.info.items() if not k.startswith("time/")} == {
            k: v for k, v in e.info.items() if not k.startswith("time/")}
        for name in ("response_ids", "response_mask", "scores", "old_logprobs", "old_entropy"):
            a, b = getattr(g, name), getattr(e, name)
            assert (a is None and b is None) or torch.equal(a, b), name
    assert got[0].info == expected[0].info  # the saved batch: its timings too
    assert got[0].old_logprobs.dtype == torch.float64  # saved as it was
    assert resumed.step == dm.step == 5


def test_rollout_ahead_zero_generates_at_the_pull_and_saves_no_batches(tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = make_dm(tokenizer_dir, arithmetic_jsonl, 0)
    dm.sync_weights(tiny_model)
    next(iter(dm.train_dataloader()))
    assert dm.step == 1 and dm.prefetched() == []
    assert dm.state_dict()["rollouts"] == {"handed_out": 1, "batches": [], "steps": [], "versions": []}


@pytest.mark.parametrize("bad", [-1, 0.5])
def test_rollout_ahead_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="rollout_ahead must be an integer >= 0"):
        RolloutDataModule(tokenizer="t", rollout_ahead=bad)
    with pytest.raises(ValueError, match="rollout_ahead"):
        RolloutQueue(bad)
