"""Batches without reward variance: kept, skipped, or resampled DAPO-style (``data.zero_variance_groups``)."""

from __future__ import annotations

import pytest
import torch
from reliability_helpers import REPO, NoSignalFirstCalls, alternating_on_odd_answers, run_cli, write_jsonl

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.models import load_causal_lm

P, G = 4, 4


@pytest.fixture(scope="module")
def policy():
    return load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, seed=0)


@pytest.fixture
def questions(tmp_path):
    """24 questions "i+0=" with answer i: odd answers get reward variance, even ones none."""
    return write_jsonl(tmp_path / "q.jsonl", [{"prompt": f"{i}+0=", "answer": str(i)} for i in range(24)])


def make_dm(policy, files, **kw):
    engine = HFEngine()
    engine.update_weights(policy)
    args = {
        "tokenizer": str(REPO / "assets" / "tiny-qwen2"),
        "train_files": files,
        "prompt_template": "{prompt}",
        "prompts_per_step": P,
        "num_generations": G,
        "max_new_tokens": 3,
        "engine": engine,
        "rewards": [alternating_on_odd_answers],
        "seed": 3,
    }
    return RolloutDataModule(**{**args, **kw})


def _groups(batch):
    """(answer, scores) of each group, in group-id order."""
    out = []
    for g in range(int(batch.group_ids.max()) + 1):
        idx = torch.nonzero(batch.group_ids == g).flatten().tolist()
        assert len(idx) == G
        out.append((batch.answers[idx[0]], batch.scores[idx].tolist()))
    return out


def _reference_resample(dm, bound):
    """The odd-answer questions, in stream order over steps 0..bound, the first P of them, then even fillers."""
    odd = [r.answer for s in range(bound + 1) for r in dm.step_prompts(s) if int(r.answer) % 2][:P]
    steps = bound + 1
    for s in range(bound + 1):
        if sum(int(r.answer) % 2 for t in range(s + 1) for r in dm.step_prompts(t)) >= P:
            steps = s + 1
            break
    even = [r.answer for r in dm.step_prompts(0) if not int(r.answer) % 2]
    return odd + even[: P - len(odd)], steps


def test_keep_is_unchanged(policy, questions):
    dm = make_dm(policy, questions)
    batch = dm.next_batch()
    assert [a for a, _ in _groups(batch)] == [r.answer for r in dm.step_prompts(0)]
    assert dm.step == 1 and not any(k.startswith("dynamic/") for k in batch.info)


@pytest.mark.parametrize("bound", [4, 0])
def test_resample_fills_the_batch_with_groups_that_have_signal(policy, questions, bound):
    dm = make_dm(policy, questions, zero_variance_groups="resample", max_extra_rollouts=bound)
    expected, steps = _reference_resample(make_dm(policy, questions), bound)
    batch = dm.next_batch()
    groups = _groups(batch)
    assert [a for a, _ in groups] == expected
    assert len(batch) == P * G and batch.response_ids.shape[0] == P * G
    signal = [a for a, s in groups if max(s) > min(s)]
    assert signal == [a for a in expected if int(a) % 2]
    assert dm.step == steps
    assert batch.info["dynamic/extra_rollouts"] == steps - 1
    assert batch.info["dynamic/filled_groups"] == P - len(signal)
    assert batch.info["dynamic/dropped_groups"] == steps * P - len(signal)
    assert batch.info["tokens/generated"] > 0


def test_resample_resumes_exactly(policy, questions):
    a = make_dm(policy, questions, zero_variance_groups="resample")
    a.next_batch()
    state = a.state_dict()
    second = a.next_batch()
    b = make_dm(policy, questions, zero_variance_groups="resample")
    b.setup("fit")
    b.load_state_dict(state)
    again = b.next_batch()
    assert again.answers == second.answers and torch.equal(again.response_ids, second.response_ids)


@pytest.mark.parametrize(("n_empty", "bound", "steps"), [(2, 4, 3), (9, 2, 3)])
def test_skip_batch_replaces_batches_without_signal_up_to_the_bound(policy, questions, n_empty, bound, steps):
    NoSignalFirstCalls.calls, NoSignalFirstCalls.n = 0, n_empty
    dm = make_dm(
        policy,
        questions,
        rewards=[NoSignalFirstCalls()],
        zero_variance_groups="skip_batch",
        max_extra_rollouts=bound,
    )
    batch = dm.next_batch()
    assert dm.step == steps and batch.info["dynamic/extra_rollouts"] == steps - 1
    assert [a for a, _ in _groups(batch)] == [r.answer for r in dm.step_prompts(steps - 1)]
    has_signal = batch.scores.max() > batch.scores.min()
    assert bool(has_signal) == (n_empty < steps)


def test_option_is_validated_and_reaches_the_cli(tmp_path):
    with pytest.raises(ValueError, match="zero_variance_groups must be 'keep', 'skip_batch' or 'resample'"):
        RolloutDataModule(tokenizer="x", zero_variance_groups="drop")
    with pytest.raises(ValueError, match="max_extra_rollouts must be >= 0, got -1"):
        RolloutDataModule(tokenizer="x", max_extra_rollouts=-1)
    cli, _ = run_cli(tmp_path, "--data.zero_variance_groups", "resample", "--trainer.max_steps", "1")
    assert cli.trainer.global_step == 1 and cli.datamodule.step >= 1
