"""Background rollouts (``data.background_rollouts``): the one-step-off batch generated in a worker thread while the
trainer updates, in real fits (the same weights and logs as the default one-step-off, the overlap itself, exact
resume, LoRA), and the pieces (``HFEngine(copy_weights=True)``, ``BackgroundGeneration``, the settings' errors)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from test_one_step_off import rows
from toy_training import REPO, SMOKE_LORA, OverlapProbeEngine, fit, initial_policy, state

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.data.prefetch import BackgroundGeneration, ParamSnapshot, RolloutQueue
from rlvr_lightning.data.types import SamplingConfig

KEYS = ("train/loss", "train/reward_mean", "train/approx_kl_first", "train/staleness", "train/entropy",
        "train/clip_frac")
BACKGROUND = ("--data.rollout_ahead", "1", "--data.background_rollouts", "true")


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _logged(tmp_path, name: str) -> list[list[float]]:
    return [[r[k] for k in KEYS] for r in rows(tmp_path, name)]


def test_background_rollouts_overlap_the_update_and_train_as_the_default_one_step_off(tmp_path):
    plain = fit(tmp_path, "--trainer.max_steps", "4", "--data.rollout_ahead", "1", name="plain")
    OverlapProbeEngine.calls = []
    probe = ("--data.engine", "toy_training.OverlapProbeEngine",
             "--trainer.callbacks+=toy_training.UpdateSignal")
    background = fit(tmp_path, "--trainer.max_steps", "4", *BACKGROUND, *probe, name="background")
    # batch 0 is generated in the trainer's thread at the first pull; batches 1..4 (4: queued at the end) each in
    # the worker, while the trainer's backward of the step before ran
    main = threading.main_thread().name
    assert OverlapProbeEngine.calls[0] == (main, False)
    worker = [c for c in OverlapProbeEngine.calls if c[0] != main]
    assert len(worker) == 4 and all(name.startswith("rlvr-rollout") and overlapped for name, overlapped in worker)
    # the same batches from the same weights, the same old log-probs (scored on the engine's copy): the same run
    assert _equal_states(state(plain.model.policy), state(background.model.policy))
    assert _logged(tmp_path, "plain") == _logged(tmp_path, "background")
    assert [r[3] for r in _logged(tmp_path, "background")] == [0.0, 1.0, 1.0, 1.0]
    assert all(abs(r[2]) > 1e-4 for r in _logged(tmp_path, "background")[1:])  # PPO ratio not 1: stale batches
    dm = background.trainer.datamodule
    assert dm.engine.copy_weights and dm.rollouts.worker._pool is None  # the worker stopped at teardown


def test_background_rollouts_resume_bit_exactly(tmp_path):
    train = tmp_path / "eight.jsonl"  # 8 prompts, 4 per step: a data epoch is 2 steps
    train.write_text("".join((REPO / "assets" / "arithmetic" / "train.jsonl").read_text().splitlines(True)[:8]))
    opts = ("--data.train_files", str(train), *BACKGROUND)
    first = fit(tmp_path, *opts, "--trainer.max_steps", "5", name="first")
    split = fit(tmp_path, *opts, "--trainer.max_steps", "2", name="split")
    assert split.trainer.global_step == 2
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    queued = torch.load(ckpt, weights_only=True)["RolloutDataModule"]["rollouts"]
    # the batch generated in the background during step 1 was completed and scored before the checkpoint
    assert queued["handed_out"] == 2 and queued["versions"] == [1] and queued["steps"] == [2]
    assert queued["batches"][0]["old_logprobs"].shape == queued["batches"][0]["response_ids"].shape
    resumed = fit(tmp_path, *opts, "--trainer.max_steps", "5", "--ckpt_path", str(ckpt), name="resumed")
    assert _equal_states(state(first.model.policy), state(resumed.model.policy))
    assert _logged(tmp_path, "first")[2:] == _logged(tmp_path, "resumed")
    assert resumed.trainer.datamodule.step == first.trainer.datamodule.step == 6


def test_background_rollouts_with_lora_train_as_the_default_one_step_off(tmp_path):
    pytest.importorskip("peft")
    common = ("--trainer.max_steps", "3", "--data.rollout_ahead", "1")
    plain = fit(tmp_path, *common, name="plain", config=SMOKE_LORA)
    background = fit(tmp_path, *common, "--data.background_rollouts", "true", name="background", config=SMOKE_LORA)
    assert _equal_states(state(plain.model.policy), state(background.model.policy))
    assert _logged(tmp_path, "plain") == _logged(tmp_path, "background")


def test_background_rollouts_on_two_ddp_processes_with_resampling_train_as_the_default(tmp_path):
    """The join completes the batch in the trainer's thread: DAPO's resampling (extra rollouts and all_gather
    collectives over the ranks) stays in lockstep, and the run equals the default one-step-off run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[1] / "reliability"), str(REPO)]))
    for name, extra in (("plain", ()), ("background", ("--data.background_rollouts", "true"))):
        cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", "configs/smoke.yaml",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.rollout_ahead", "1", *extra,
               "--data.zero_variance_groups", "resample", "--data.seed_per_prompt", "true",
               "--data.rewards", "reliability_helpers.alternating_on_odd_answers",
               "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    plain, background = rows(tmp_path, "plain"), rows(tmp_path, "background")
    assert [r["train/staleness"] for r in background] == [0.0, 1.0, 1.0]
    assert all(r["rollout/dynamic/extra_rollouts"] > 0 for r in background)  # resampled at every step
    untimed = [[{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in run]
               for run in (plain, background)]
    assert untimed[0] == untimed[1] and "train/loss" in untimed[0][0]
    weights = [torch.load(next((tmp_path / n).rglob("last.ckpt")), weights_only=True)["state_dict"]
               for n in ("plain", "background")]
    assert _equal_states(*weights)


# -- the pieces ---------------------------------------------------------------------------------------------------
SAMPLING = SamplingConfig(n=3, max_new_tokens=6, temperature=1.0)
PROMPTS = [[5, 6, 7], [8, 9]]


def _engine(**kw) -> HFEngine:
    from transformers import AutoTokenizer

    engine = HFEngine(**kw)
    engine.setup(AutoTokenizer.from_pretrained(str(REPO / "assets" / "tiny-qwen2")))
    return engine


def _tokens(groups) -> list[list[list[int]]]:
    return [[s.token_ids for s in g] for g in groups]


def test_a_copying_engine_samples_what_the_policy_samples_and_follows_its_updates():
    policy = initial_policy()
    shared, copying = _engine(), _engine(copy_weights=True)
    shared.update_weights(policy)
    copying.update_weights(policy)
    assert copying.weights_copy is not policy and not any(p.requires_grad for p in copying.weights_copy.parameters())
    assert _tokens(copying.generate(PROMPTS, SAMPLING, seed=1)) == _tokens(shared.generate(PROMPTS, SAMPLING, seed=1))
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(3.0)  # the policy moves: the copy keeps the old weights until the next sync
    moved = _tokens(shared.generate(PROMPTS, SAMPLING, seed=1))
    assert _tokens(copying.generate(PROMPTS, SAMPLING, seed=1)) != moved
    copying.update_weights(policy)
    assert _tokens(copying.generate(PROMPTS, SAMPLING, seed=1)) == moved
    assert _equal_states(state(copying.weights_copy), state(policy))


def test_background_generation_returns_the_started_call_and_its_errors():
    policy = initial_policy()
    engine = _engine(copy_weights=True)
    engine.update_weights(policy)
    worker = BackgroundGeneration()
    worker.start(engine, PROMPTS, SAMPLING, 4)
    assert worker.take(PROMPTS, SAMPLING, 5) is None  # another call: not the started one (still pending)
    got = worker.take(PROMPTS, SAMPLING, 4)
    assert _tokens(got) == _tokens(engine.generate(PROMPTS, SAMPLING, seed=4))
    assert worker.take(PROMPTS, SAMPLING, 4) is None  # taken once
    worker.start(engine, [[]], SAMPLING, 4)  # an empty prompt: the engine's error reaches the caller
    with pytest.raises(ValueError, match="at least one token"):
        worker.take([[]], SAMPLING, 4)
    worker.close()


def test_background_rollout_settings_are_checked():
    with pytest.raises(ValueError, match="needs data.rollout_ahead >= 1"):
        RolloutQueue(0, background=True)
    with pytest.raises(ValueError, match="needs copy_weights=True"):
        HFEngine(device="cpu")
    dm = RolloutDataModule(tokenizer=str(REPO / "assets" / "tiny-qwen2"),
                           train_files=str(REPO / "assets" / "arithmetic" / "train.jsonl"), rollout_ahead=1,
                           background_rollouts=True, engine=HFEngine())  # given, sampling from the policy itself
    with pytest.raises(ValueError, match=r"background_rollouts needs an engine .*HFEngine\(copy_weights=True\)"):
        dm.setup("fit")
    named = RolloutDataModule(tokenizer=str(REPO / "assets" / "tiny-qwen2"),
                              train_files=str(REPO / "assets" / "arithmetic" / "train.jsonl"), rollout_ahead=1,
                              background_rollouts=True, engine="hf")
    assert named.engine.copy_weights  # an engine built by name copies


def test_a_param_snapshot_restores_the_trainable_parameters_for_a_call_and_puts_the_current_ones_back():
    policy = initial_policy()
    policy.model.embed_tokens.weight.requires_grad_(False)  # frozen (as a LoRA base): not copied, never changes
    snapshot = ParamSnapshot()
    snapshot.take(policy)
    before = state(policy)
    assert len(snapshot.tensors) == sum(p.requires_grad for p in policy.parameters())
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.25)
    after = state(policy)
    with snapshot.restored(policy) as sampled:
        assert sampled is policy and _equal_states(state(policy), before)
    assert _equal_states(state(policy), after)  # bit for bit: the values were swapped, not recomputed
    with snapshot.restored(policy):  # and again: the snapshot still holds the old values
        assert _equal_states(state(policy), before)
    policy.model.norm.weight.requires_grad_(False)  # one trainable parameter fewer than at the snapshot
    with pytest.raises(RuntimeError, match="the snapshot holds .* parameters"):
        with snapshot.restored(policy):
            pass
