"""One-step-off rollouts (``data.rollout_ahead: 1``) in real fits: staleness logged, the PPO ratio and truncated
importance sampling taken against the weights that sampled each batch, determinism, exact resume; and the old
log-probs a stale batch carries (``rlvr_lightning.scoring.old_logprobs``) against a naive float64 reference."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_training import REPO, fit, state
from transformers import GPT2Config, GPT2LMHeadModel

from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.scoring import Scoring, old_logprobs


def rows(tmp_path, name: str) -> list[dict[str, float]]:
    """The training rows of a run's metrics.csv, by column, one per rollout step (a row repeated at a data
    epoch's end would count once), in order."""
    by_step: dict[float, dict[str, float]] = {}
    for r in csv.DictReader(open(next((tmp_path / name).rglob("metrics.csv")))):
        if r.get("train/loss"):
            by_step.setdefault(float(r["rollout_step"]), {k: float(v) for k, v in r.items() if v != ""})
    return [by_step[k] for k in sorted(by_step)]


def test_one_step_off_logs_staleness_and_trains_against_the_sampling_weights(tmp_path):
    common = ("--trainer.max_steps", "4", "--data.rollout_logprobs", "true")  # one update per rollout batch
    on = fit(tmp_path, *common, "--data.rollout_ahead", "0", name="on")
    off = fit(tmp_path, *common, "--data.rollout_ahead", "1", name="off")
    a, b = rows(tmp_path, "on"), rows(tmp_path, "off")
    assert [r["train/staleness"] for r in a] == [0.0] * 4
    assert [r["train/staleness"] for r in b] == [0.0, 1.0, 1.0, 1.0]
    for r in a + b[:1]:  # on-policy: the first update starts at ratio 1
        assert abs(r["train/approx_kl_first"]) < 1e-7 and r["train/clip_frac"] == 0.0, r
    for r in b[1:]:  # one step off: the first update's ratio is pi_now / pi_sampling, not 1
        assert abs(r["train/approx_kl_first"]) > 1e-4 and r["train/clip_frac"] > 0.0, r
    # the old log-probs are those of the weights that sampled the batch: the HF engine's own log-probs of its
    # samples agree with them to float precision, while the current weights are |approx_kl| > 1e-4 away
    assert all(r["train/rollout_logprob_diff"] < 1e-5 for r in a + b)
    # the first batch is the same one, from the same weights; later batches come from older weights
    assert a[0]["train/loss"] == b[0]["train/loss"] and a[0]["train/reward_mean"] == b[0]["train/reward_mean"]
    assert max(float((x - y).abs().max()) for x, y in zip(state(on.model.policy).values(),
                                                          state(off.model.policy).values())) > 1e-4


def test_one_step_off_is_deterministic_and_resumes_bit_exactly(tmp_path):
    train = tmp_path / "eight.jsonl"  # 8 prompts, 4 per step: a data epoch is 2 steps
    train.write_text("".join((REPO / "assets" / "arithmetic" / "train.jsonl").read_text().splitlines(True)[:8]))
    opts = ("--data.train_files", str(train), "--data.rollout_ahead", "1")
    first = fit(tmp_path, *opts, "--trainer.max_steps", "5", name="first")
    again = fit(tmp_path, *opts, "--trainer.max_steps", "5", name="again")
    split = fit(tmp_path, *opts, "--trainer.max_steps", "2", name="split")
    # saved at the end of data epoch 0: the queue holds epoch 1's first batch, sampled before step 1's update,
    # with the trainer's log-probs of those weights, in a checkpoint that loads weights_only
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    queued = torch.load(ckpt, weights_only=True)["RolloutDataModule"]["rollouts"]
    assert queued["handed_out"] == 2 and queued["versions"] == [1] and queued["steps"] == [2]
    assert queued["batches"][0]["old_logprobs"].shape == queued["batches"][0]["response_ids"].shape
    resumed = fit(tmp_path, *opts, "--trainer.max_steps", "5", "--ckpt_path", str(ckpt), name="resumed")
    assert split.trainer.global_step == 2 and resumed.trainer.global_step == 5
    want = state(first.model.policy)
    for run in (again, resumed):
        got = state(run.model.policy)
        assert all(torch.equal(got[k], want[k]) for k in want)
    keys = ("train/loss", "train/reward_mean", "train/approx_kl_first", "train/staleness", "train/entropy")
    straight = [[r[k] for k in keys] for r in rows(tmp_path, "first")]
    assert straight == [[r[k] for k in keys] for r in rows(tmp_path, "again")]
    assert straight[2:] == [[r[k] for k in keys] for r in rows(tmp_path, "resumed")]
    assert [s[3] for s in straight] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert resumed.trainer.datamodule.step == first.trainer.datamodule.step == 6


def test_one_step_off_on_two_fsdp2_processes_matches_one(tmp_path):
    """Each rank queues and scores its own share of the batches generated ahead, in lockstep with the other."""
    opts = ("--data.rollout_ahead", "1", "--data.seed_per_prompt", "true")
    fit(tmp_path, *opts, name="one")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(REPO)]))
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", "configs/smoke_fsdp2.yaml", *opts,
           "--data.rewards", "toy_training.digit_reward", "--trainer.logger.init_args.save_dir", str(tmp_path),
           "--trainer.logger.init_args.name", "two"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = rows(tmp_path, "one"), rows(tmp_path, "two")
    assert [r["train/staleness"] for r in two] == [0.0, 1.0, 1.0]
    for key in ("train/loss", "train/approx_kl_first", "train/clip_frac", "train/entropy", "train/reward_mean"):
        for a, b in zip(one, two, strict=True):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (key, a[key], b[key])
    assert abs(two[1]["train/approx_kl_first"]) > 1e-4


# -- old_logprobs against a naive float64 reference ---------------------------------------------------------------
V, B, TP, T = 11, 4, 3, 5


def tiny_policy() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=32, initializer_range=0.3,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1)
    return GPT2LMHeadModel(config).double()


def rollout_batch(seed: int, staleness: int = 0) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(B, TP, dtype=torch.bool)
    prompt_mask[1, :2] = False  # left padding
    response_mask = torch.arange(T)[None] < torch.tensor([5, 2, 4, 1])[:, None]
    return RolloutBatch(
        prompt_ids=torch.randint(2, V, (B, TP), generator=g) * prompt_mask, prompt_mask=prompt_mask,
        response_ids=torch.randint(2, V, (B, T), generator=g) * response_mask, response_mask=response_mask,
        group_ids=torch.tensor([0, 0, 1, 1]), scores=torch.tensor([1.0, 0.0, 0.0, 1.0]),
        truncated=torch.zeros(B, dtype=torch.bool), temperature=0.7, staleness=staleness,
    )


def naive_logprobs(policy: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """One unpadded sequence at a time: log_softmax(logits / temperature) of each response token, 0 on padding."""
    out = torch.zeros(B, T, dtype=torch.float64)
    with torch.no_grad():
        for i in range(B):
            prompt = batch.prompt_ids[i][batch.prompt_mask[i]]
            n = int(batch.response_mask[i].sum())
            ids = torch.cat([prompt, batch.response_ids[i, :n]])
            logits = policy(input_ids=ids[None]).logits[0].double() / batch.temperature
            for t in range(n):
                out[i, t] = torch.log_softmax(logits[len(prompt) + t - 1], -1)[ids[len(prompt) + t]]
    return out


def test_old_logprobs_are_those_of_the_weights_that_sampled_the_batch():
    policy = tiny_policy()
    now, ahead = rollout_batch(0), rollout_batch(1)
    logp, entropy = old_logprobs(Scoring(micro_batch_size=3), policy, now, [ahead])
    mask = now.response_mask
    torch.testing.assert_close((logp * mask).double(), naive_logprobs(policy, now), rtol=0, atol=1e-6)  # float32 out
    assert entropy.shape == (B, T) and bool((entropy[mask] > 0).all())
    # the batch generated ahead is scored now, with these weights, and keeps its values after the weights move
    expected = naive_logprobs(policy, ahead)
    torch.testing.assert_close((ahead.old_logprobs * ahead.response_mask).double(), expected, rtol=0, atol=1e-6)
    kept = ahead.old_logprobs.clone()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1)
    ahead.staleness = 1
    logp_later, _ = old_logprobs(Scoring(), policy, ahead, [])
    assert torch.equal(logp_later, kept)
    assert float(((naive_logprobs(policy, ahead) - expected) * ahead.response_mask).abs().max()) > 1e-3


def test_a_stale_batch_without_its_log_probs_is_refused():
    with pytest.raises(ValueError, match="staleness 1 carries no old_logprobs"):
        old_logprobs(Scoring(), tiny_policy(), rollout_batch(0, staleness=1), [])
