"""End-to-end training on the smoke config: what an update changes, N updates per batch, exact resume."""

from __future__ import annotations

import pytest
import torch
from toy_training import REPO, CountingReweight, fit, initial_policy, state

from rlvr_lightning.data import HFEngine


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fit_updates_policy_but_not_reference(tmp_path):
    cli = fit(tmp_path, "--model.kl", "KL", "--model.kl.coef", "0.1", "--trainer.max_steps", "2")
    init = state(initial_policy())
    assert cli.model.reference is not None
    assert _max_diff(state(cli.model.policy), init) > 1e-4, "the policy did not move"
    assert _max_diff(state(cli.model.reference), init) == 0.0, "the reference moved"
    assert not any(p.requires_grad for p in cli.model.reference.parameters())
    assert cli.trainer.global_step == 2 and cli.model.rollout_step == 2
    # the frozen reference is not saved: checkpoints hold the policy only, and resuming rebuilds the reference
    ckpt = next(tmp_path.rglob("last.ckpt"))
    keys = torch.load(ckpt, weights_only=True)["state_dict"].keys()
    assert keys and all(k.startswith("policy.") for k in keys)
    resumed = fit(tmp_path, "--model.kl", "KL", "--model.kl.coef", "0.1", "--trainer.max_steps", "3",
                  "--ckpt_path", str(ckpt), name="resumed")
    assert resumed.trainer.global_step == 3
    assert _max_diff(state(resumed.model.reference), init) == 0.0


def test_no_reference_without_kl(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps", "1")
    assert cli.model.reference is None


def test_off_policy_n_gives_n_optimizer_steps_per_rollout_batch(tmp_path):
    cli = fit(tmp_path, "--model.ppo_epochs", "2", "--model.num_mini_batches", "2", "--trainer.max_steps", "8")
    assert cli.trainer.global_step == 8
    assert cli.model.rollout_step == 2  # 8 optimizer steps = 2 rollout batches x N = 4


def test_par_lambda_changes_the_update_and_lambda_one_equals_uniform(tmp_path):
    common = ("--trainer.max_steps", "1", "--model.micro_batch_size", "4")
    par = ("--model.reweight", "PAR", "--model.reweight.lam")
    par0 = state(fit(tmp_path, *par, "0.0", *common, name="a").model.policy)
    par1 = state(fit(tmp_path, *par, "1.0", *common, name="b").model.policy)
    uni = state(fit(tmp_path, "--model.reweight", "Uniform", *common, name="c").model.policy)
    init = state(initial_policy())
    assert _max_diff(par0, par1) > 1e-5
    assert _max_diff(par1, uni) == 0.0
    assert _max_diff(par0, init) > 0  # negative-advantage tokens still move the policy


def test_user_reweight_given_by_class_path_is_the_one_called(tmp_path):
    CountingReweight.calls = 0
    cli = fit(tmp_path, "--model.reweight", "toy_training.CountingReweight", "--model.reweight.factor", "0.5",
              "--trainer.max_steps", "1")
    assert type(cli.model.reweight) is CountingReweight and cli.model.reweight.factor == 0.5
    assert CountingReweight.calls >= 1


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    opts = ("--model.reweight", "EntropyGuidedPAR", "--model.reweight.delta", "5.0", "--model.reweight.lam0", "1.0")
    straight = fit(tmp_path, *opts, "--trainer.max_steps", "4", name="straight")
    first = fit(tmp_path, *opts, "--trainer.max_steps", "2", name="split")
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    resumed = fit(tmp_path, *opts, "--trainer.max_steps", "4", "--ckpt_path", str(ckpt), name="split")
    assert first.trainer.global_step == 2 and resumed.trainer.global_step == 4
    assert resumed.trainer.datamodule.step == straight.trainer.datamodule.step == 4
    # entropy-guided lambda went through the checkpoint (entropy below delta: it falls by 0.05 every step)
    assert resumed.model.reweight.lam == straight.model.reweight.lam
    assert abs(straight.model.reweight.lam - 0.8) < 1e-12
    assert _max_diff(state(resumed.model.policy), state(straight.model.policy)) == 0.0


def test_truncated_importance_sampling_corrects_a_mismatched_sampler(tmp_path):
    common = ("--trainer.max_steps", "1", "--data.rollout_logprobs", "true")
    shifted = ("--data.engine", "toy_training.ShiftedLogprobEngine", "--data.engine.shift", "0.5")
    off = fit(tmp_path, *common, "--model.tis_cap", "null", name="off")
    matched = fit(tmp_path, *common, name="matched")  # HF engine: its log-probs are the trainer's, weights ~1
    on = fit(tmp_path, *common, *shifted, name="on")
    # the sampler claims every second token was e^0.5 more likely than the trainer thinks: those tokens get weight
    # e^-0.5, which changes the direction of the update (a uniform weight would not, under Adam)
    shifted_effect = _max_diff(state(on.model.policy), state(off.model.policy))
    assert shifted_effect > 1e-4
    # matched log-probs give weights within ~1e-6 of 1: the update is the uncorrected one up to Adam's amplification
    assert _max_diff(state(matched.model.policy), state(off.model.policy)) < 0.05 * shifted_effect
    logged = on.trainer.callback_metrics
    assert 0.1 < float(logged["train/rollout_logprob_diff"]) < 0.5  # 0.5 on odd positions, ~0 on even ones
    assert not HFEngine.logprobs_by_default


def test_rollout_logprobs_default_follows_the_engine():
    from rlvr_lightning.data import RolloutDataModule
    from rlvr_lightning.data.vllm_engine import VLLMEngine

    assert RolloutDataModule(tokenizer="t").sampling.logprobs is False
    assert RolloutDataModule(tokenizer="t", engine=VLLMEngine(model="m")).sampling.logprobs is True
    off = RolloutDataModule(tokenizer="t", rollout_logprobs=False, engine=VLLMEngine(model="m"))
    assert off.sampling.logprobs is False


@pytest.mark.parametrize("aggregation", ["TokenMean", "SeqMeanTokenMean"])
def test_micro_batching_gives_the_update_and_logs_of_one_big_batch(tmp_path, aggregation):
    common = ("--trainer.max_steps", "2", "--model.kl", "KL", "--model.kl.coef", "0.5",
              "--model.aggregation", aggregation)
    whole = fit(tmp_path, *common, "--model.micro_batch_size", "null", name="whole")
    micro = fit(tmp_path, *common, "--model.micro_batch_size", "3", name="micro")  # 16 = 3+3+3+3+3+1
    assert _max_diff(state(whole.model.policy), state(micro.model.policy)) < 1e-5
    a, b = whole.trainer.callback_metrics, micro.trainer.callback_metrics
    for key in ("train/loss", "train/kl_ref", "train/clip_frac", "train/approx_kl", "train/grad_norm"):
        assert abs(float(a[key]) - float(b[key])) <= 1e-5 * max(1.0, abs(float(a[key]))), key
    assert float(a["train/kl_ref"]) > 0  # k3 of a moved policy vs the reference: positive, and unscaled by coef


def test_logged_lambda_is_the_one_the_updates_used(tmp_path):
    import csv

    fit(tmp_path, "--model.reweight", "EntropyGuidedPAR", "--model.reweight.delta", "0.0", name="lam")
    rows = list(csv.DictReader(open(next((tmp_path / "lam").rglob("metrics.csv")))))
    # entropy is above delta = 0, so lambda rises 0 -> 0.05 -> 0.10 after each batch; batch k used k * 0.05
    assert [round(float(r["train/lambda"]), 6) for r in rows] == [0.0, 0.05, 0.1]


def test_epoch_and_stage_schedules_follow_the_run(tmp_path):
    import csv

    train = tmp_path / "eight.jsonl"
    train.write_text("".join((REPO / "assets" / "arithmetic" / "train.jsonl").read_text().splitlines(True)[:8]))
    common = ("--data.train_files", str(train), "--trainer.max_steps", "6")  # P = 4: 2 steps per data epoch, E = 3

    def lambdas(name, *extra):
        fit(tmp_path, *common, *extra, name=name)
        rows = csv.DictReader(open(next((tmp_path / name).rglob("metrics.csv"))))
        by_step = {r["rollout_step"]: r["train/lambda"] for r in rows if r.get("train/lambda")}
        assert sorted(by_step, key=float) == [str(float(k)) for k in range(1, 7)]
        return [round(float(by_step[k]), 6) for k in sorted(by_step, key=float)]

    assert lambdas("epoch", "--model.reweight", "EpochPAR") == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    # stage-based: 0 for the first half of the 6 optimizer steps, then linear in progress = step / 6
    assert lambdas("stage", "--model.reweight", "StagePAR") == [0.0, 0.0, 0.0, 0.0, round(1 / 3, 6), round(2 / 3, 6)]
