"""``rlvr fit`` with the real vLLM engine on 2 FSDP2 processes (gloo): the engine keeps up with the policy.

Runs where vLLM is importable (``scripts/setup_vllm_cpu.sh``; ``make test-vllm``). The smoke run is trained with
the vLLM engine instead of the HF one, in float32 on both sides, so the trainer's log-probs of the rollout tokens
(``old_logp``, from the current policy) and vLLM's (from the weights it sampled with) agree to float rounding
only if every update reached vLLM: the logged mean |log-ratio| ``train/rollout_logprob_diff`` is the check. A
control run whose engine never receives weights shows how large that mismatch is once the policy has moved.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_training import REPO
from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
pytest.importorskip("vllm")

ASSET = REPO / "assets" / "tiny-qwen2"
SYNCED_TOL = 1e-4  # nats per token: float32 vLLM vs float32 trainer on the same weights (seen: ~1e-6)
STALE_MIN = 1e-3  # nats per token: what one AdamW step at lr 1e-3 moves this model's log-probs by, at least

_NO_SYNC = '''
from __future__ import annotations  # as in the protocol: jsonargparse compares the resolved annotations

from torch import nn

from rlvr_lightning.data.vllm_engine import VLLMEngine


class StaleVLLMEngine(VLLMEngine):
    """Never receives the policy's weights: samples from the initial model throughout."""

    def update_weights(self, policy: nn.Module) -> None:
        self.last_sync_seconds = 0.0
'''


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen2-fit")
    config = AutoConfig.from_pretrained(ASSET)
    config.initializer_range = 0.1
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).float().save_pretrained(path)
    AutoTokenizer.from_pretrained(ASSET).save_pretrained(path)
    return path


def _fit(model_dir: Path, out: Path, engine: str, tp: int, *extra: str) -> list[dict[str, str]]:
    (out / "stale_engine.py").write_text(_NO_SYNC)
    path = os.pathsep.join([str(out), str(Path(__file__).parent), str(REPO)])
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=path)
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", "configs/smoke_fsdp2.yaml",
           "--model.model", str(model_dir), "--model.from_scratch", "false",
           "--data.rewards", "toy_training.digit_reward",
           "--data.engine", engine, "--data.engine.model", str(model_dir), "--data.engine.dtype", "float32",
           "--data.engine.enforce_eager", "true", "--data.engine.max_model_len", "64",
           "--data.engine.tensor_parallel_size", str(tp),
           "--checkpoint.every_n_train_steps", "0", "--trainer.logger.init_args.save_dir", str(out), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    assert [int(float(r["rollout_step"])) for r in rows] == [1, 2, 3]
    assert all(float(r["train/grad_norm"]) > 0 for r in rows)  # the policy does move
    return rows


@pytest.mark.parametrize("tp", [1, 2])
def test_fit_with_vllm_samples_from_the_current_policy(model_dir, tmp_path, tp):
    """Rollouts of steps 2 and 3 come after updates; their vLLM log-probs match the updated policy's."""
    rows = _fit(model_dir, tmp_path, "rlvr_lightning.data.vllm_engine.VLLMEngine", tp)
    diffs = [float(r["train/rollout_logprob_diff"]) for r in rows]
    assert max(diffs) < SYNCED_TOL, diffs
    assert all(float(r["time/weight_sync"]) > 0 for r in rows)


def test_a_stale_engine_shows_as_a_mismatch(model_dir, tmp_path):
    """The control: without weight sync the same run logs a mismatch once the policy has been updated."""
    rows = _fit(model_dir, tmp_path, "stale_engine.StaleVLLMEngine", 2)
    diffs = [float(r["train/rollout_logprob_diff"]) for r in rows]
    assert diffs[0] < SYNCED_TOL, diffs  # step 1 samples before any update: the weights still agree
    assert min(diffs[1:]) > STALE_MIN, diffs


def test_a_lora_fit_syncs_merged_weights_into_vllm(model_dir, tmp_path):
    """LoRA adapters under FSDP2: vLLM receives base + adapters merged after every update, so its log-probs of
    steps 2 and 3 match the adapted policy's."""
    pytest.importorskip("peft")
    rows = _fit(model_dir, tmp_path, "rlvr_lightning.data.vllm_engine.VLLMEngine", 1,
                "--model.lora.rank", "2", "--model.lora.alpha", "16.0")
    assert 0 < float(rows[0]["model/trainable_params"]) < 0.05 * float(rows[0]["model/total_params"])
    diffs = [float(r["train/rollout_logprob_diff"]) for r in rows]
    assert max(diffs) < SYNCED_TOL, diffs


def test_one_step_off_with_vllm_trains_each_batch_against_the_weights_that_sampled_it(model_dir, tmp_path):
    """``rollout_ahead: 1``: from step 2 on each batch was sampled by vLLM one policy version earlier; the old
    log-probs the trainer attached when it was generated are those of that version, so they match vLLM's, while
    the current policy's have moved (the first update's PPO ratio is not 1)."""
    rows = _fit(model_dir, tmp_path, "rlvr_lightning.data.vllm_engine.VLLMEngine", 1, "--data.rollout_ahead", "1")
    assert [float(r["train/staleness"]) for r in rows] == [0.0, 1.0, 1.0]
    diffs = [float(r["train/rollout_logprob_diff"]) for r in rows]
    assert max(diffs) < SYNCED_TOL, diffs
    assert min(abs(float(r["train/approx_kl_first"])) for r in rows[1:]) > 1e-4


def test_background_rollouts_with_vllm_overlap_and_train_against_the_sampling_weights(model_dir, tmp_path):
    """``background_rollouts``: vLLM generates the batch ahead in a worker thread while FSDP2 updates; the batch is
    scored at the join with the parameters vLLM sampled with put back into the policy, so the old log-probs still
    match vLLM's, and the run equals the default one-step-off run."""
    common = ("--data.rollout_ahead", "1", "--data.seed_per_prompt", "true")
    for name in ("plain", "background"):
        (tmp_path / name).mkdir()
    plain = _fit(model_dir, tmp_path / "plain", "rlvr_lightning.data.vllm_engine.VLLMEngine", 1, *common)
    rows = _fit(model_dir, tmp_path / "background", "rlvr_lightning.data.vllm_engine.VLLMEngine", 1, *common,
                "--data.background_rollouts", "true")
    assert [float(r["train/staleness"]) for r in rows] == [0.0, 1.0, 1.0]
    diffs = [float(r["train/rollout_logprob_diff"]) for r in rows]
    assert max(diffs) < SYNCED_TOL, diffs
    assert min(abs(float(r["train/approx_kl_first"])) for r in rows[1:]) > 1e-4
    for key in ("train/loss", "train/reward_mean", "train/approx_kl_first", "train/entropy"):
        for a, b in zip(plain, rows, strict=True):
            assert abs(float(a[key]) - float(b[key])) <= 1e-5 * max(1.0, abs(float(a[key]))), (key, a[key], b[key])
