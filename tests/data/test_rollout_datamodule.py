"""RolloutDataModule on the tiny model: batch structure, rewards, epochs, resume, rank sharding, validation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.rewards import ExactMatchReward


def make_dm(tokenizer_dir, tiny_model, files, **kw):
    engine = HFEngine(batch_size=16)
    engine.update_weights(tiny_model)
    args = {
        "tokenizer": tokenizer_dir,
        "train_files": files,
        "prompts_per_step": 4,
        "num_generations": 3,
        "max_new_tokens": 6,
        "engine": engine,
        "rewards": [ExactMatchReward()],
        "seed": 5,
    }
    args.update(kw)
    return RolloutDataModule(**args)


def test_batch_structure(tokenizer_dir, tiny_model, arithmetic_jsonl, tokenizer):
    def length_reward(completions, answers):
        return [float(len(c)) for c in completions]

    dm = make_dm(
        tokenizer_dir,
        tiny_model,
        arithmetic_jsonl,
        rollout_logprobs=True,
        rewards=[ExactMatchReward(), length_reward],
        reward_weights=[1.0, 0.5],
    )
    batch = next(iter(dm.train_dataloader()))
    B = 12
    assert len(batch) == B and dm.step == 1
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert batch.prompt_ids.shape[0] == B and batch.response_ids.shape[0] == B
    assert batch.response_ids.shape[1] <= 6
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for j in range(B):
        p = batch.prompt_ids[j][batch.prompt_mask[j]].tolist()
        assert p == tokenizer(batch.prompts[j])["input_ids"]
        assert batch.prompt_mask[j].tolist() == sorted(batch.prompt_mask[j].tolist())  # left padding
        n = int(batch.response_mask[j].sum())
        assert batch.response_mask[j, :n].all() and not batch.response_mask[j, n:].any()  # right padding
        resp = batch.response_ids[j, :n].tolist()
        assert (batch.response_ids[j, n:] == pad).all()
        assert bool(batch.truncated[j]) == (eos not in resp) and (bool(batch.truncated[j]) or resp[-1] == eos)
        assert batch.completions[j] == tokenizer.decode(resp, skip_special_tokens=True)
        assert (batch.rollout_logprobs[j, n:] == 0).all() and (batch.rollout_logprobs[j, :n] <= 0).all()
        # weighted sum of both rewards, recomputed independently
        exact = 1.0 if ExactMatchReward()([batch.completions[j]], [batch.answers[j]])[0] else 0.0
        assert batch.scores[j].item() == pytest.approx(exact + 0.5 * len(batch.completions[j]))
    prompts_of_group = {batch.prompts[j] for j in range(B) if batch.group_ids[j] == 0}
    assert len(prompts_of_group) == 1
    assert batch.info["tokens/generated"] == batch.response_mask.sum().item()
    assert batch.info["time/rollout"] > 0 and batch.info["time/scoring"] >= 0
    assert batch.info["reward/errors"] == 0


def test_default_math_reward_and_rollout_overrides(tokenizer_dir, tiny_model, arithmetic_jsonl, math_reward):
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl, rewards=[math_reward])
    recs = dm.train_prompts[:2]
    batch = dm.rollout(recs, n=2, seed=0, temperature=0.0, max_new_tokens=3)
    assert len(batch) == 4 and batch.response_ids.shape[1] <= 3
    assert batch.completions[0] == batch.completions[1]  # greedy
    assert "reward/MathVerifyReward/unparsed" in batch.info
    assert batch.info["reward/unparsed"] == batch.info["reward/MathVerifyReward/unparsed"]
    assert dm.step == 0  # rollout() does not advance training


def test_reward_errors_caught_or_strict(tokenizer_dir, tiny_model, arithmetic_jsonl):
    def broken(completions, answers, **kw):
        raise RuntimeError("boom")

    dm = make_dm(
        tokenizer_dir,
        tiny_model,
        arithmetic_jsonl,
        rewards=[broken, "rlvr_lightning.rewards.ExactMatchReward"],
    )
    with pytest.warns(RuntimeWarning, match="reward broken raised RuntimeError: boom"):
        batch = dm.next_batch()
    assert batch.info["reward/errors"] == 1
    assert batch.scores.tolist() == ExactMatchReward()(batch.completions, batch.answers)
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl, rewards=[broken], strict_rewards=True)
    with pytest.raises(RuntimeError, match="boom"):
        dm.next_batch()


def test_epochs_cover_all_prompts(tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl, max_new_tokens=1, num_generations=1)
    assert dm.steps_per_epoch == 3 and dm.epoch == 0
    seen = [[set(b.prompts) for b in dm.train_dataloader()] for _ in range(2)]
    assert [len(e) for e in seen] == [3, 3] and dm.epoch == 2 and dm.step == 6
    all_texts = {r.text for r in dm.train_prompts}
    for epoch in seen:
        assert set().union(*epoch) == all_texts and sum(len(s) for s in epoch) == 12
    assert [dm.step_prompts(s) for s in range(3)] != [dm.step_prompts(s) for s in range(3, 6)]


def test_state_dict_resume_reproduces_next_batch(tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl)
    it = iter(dm.train_dataloader())
    next(it), next(it)
    state = dm.state_dict()
    expected = next(it)
    assert state["step"] == 2 and state["epoch"] == 0

    resumed = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl)
    resumed.load_state_dict(state)
    got = next(iter(resumed.train_dataloader()))
    assert got.prompts == expected.prompts and got.completions == expected.completions
    assert torch.equal(got.response_ids, expected.response_ids)
    # the resumed iterator finishes the epoch where the first run did
    assert (
        resumed.step == 3 and next(iter(resumed.train_dataloader()), None) is not None and resumed.epoch == 1
    )


def test_rank_sharding_disjoint(tokenizer_dir, tiny_model, arithmetic_jsonl):
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl)
    full = [r.text for r in dm.step_prompts(1)]
    shards = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shards.append([r.text for r in dm.step_prompts(1)])
    assert len(shards[0]) == len(shards[1]) == 2
    assert not set(shards[0]) & set(shards[1]) and shards[0] + shards[1] == full
    dm.trainer = SimpleNamespace(world_size=3, global_rank=0)
    with pytest.raises(ValueError, match="prompts_per_step=4 is not divisible by the world size 3"):
        dm.step_prompts(0)


def test_validation_batches_and_overlong(tmp_path, tokenizer_dir, tiny_model, arithmetic_jsonl):
    val = tmp_path / "val.jsonl"
    val.write_text(
        "".join(
            json.dumps({"question": q, "sol": a}) + "\n"
            for q, a in [("1+2=", 3), ("2+2=", 4), ("9" * 30, 1), ("5+5=", 10)]
        )
    )
    dm = make_dm(
        tokenizer_dir,
        tiny_model,
        arithmetic_jsonl,
        val_files=str(val),
        val_batch_size=2,
        max_prompt_length=20,
        prompt_template="{question}",
    )
    with pytest.raises(
        ValueError, match=r"train\.jsonl line 1: prompt_template '\{question\}' cannot be filled"
    ):
        dm.setup("fit")  # the training file has no `question` field
    dm = make_dm(
        tokenizer_dir,
        tiny_model,
        str(val),
        val_files=str(val),
        val_batch_size=2,
        max_prompt_length=20,
        prompt_field="question",
        answer_field="sol",
        prompts_per_step=3,
    )
    with pytest.warns(UserWarning, match="dropped 1 of 4 prompts"):
        dm.setup("fit")
    batches = dm.val_dataloader()
    assert [b["answers"] for b in batches] == [["3", "4"], ["10"]]
    assert batches[0]["prompts"] == ["1+2=", "2+2="] and len(batches[0]["prompt_ids"][0]) == 4
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    # ranks get equally many questions (a sharded forward needs every rank): rank 1 repeats one, marked invalid
    rank1 = list(dm.val_dataloader())
    assert [b["answers"] for b in rank1] == [["4", "4"]] and rank1[0]["valid"] == [True, False]


def test_cli_signature_parses(tokenizer_dir):
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RolloutDataModule, "data")
    cfg = parser.parse_object(
        {
            "data": {
                "tokenizer": tokenizer_dir,
                "engine": {"class_path": "rlvr_lightning.data.HFEngine", "init_args": {"batch_size": 4}},
                "rewards": [{"class_path": "rlvr_lightning.rewards.ExactMatchReward"}],
                "overlong_prompts": "error",
            }
        }
    )
    dm = parser.instantiate(cfg).data
    assert isinstance(dm.engine, HFEngine) and dm.engine.batch_size == 4
    assert isinstance(dm.reward_fns[0], ExactMatchReward)
    with pytest.raises(ArgumentError, match="overlong_prompts"):
        parser.parse_object({"data": {"tokenizer": "x", "overlong_prompts": "skip"}})


def test_non_finite_reward_scores_become_zero_and_are_counted(tokenizer_dir, tiny_model, arithmetic_jsonl):
    def half_nan(completions, answers, **kw):
        return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]

    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl, rewards=[half_nan])
    batch = dm.next_batch()
    assert batch.scores.tolist() == [0.0 if i % 2 else 1.0 for i in range(len(batch))]
    assert batch.info["reward/nonfinite"] == len(batch) // 2
    dm = make_dm(tokenizer_dir, tiny_model, arithmetic_jsonl, rewards=[half_nan], strict_rewards=True)
    with pytest.raises(ValueError, match="non-finite"):
        dm.next_batch()
