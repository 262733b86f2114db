"""Clip-Cov and KL-Cov in real fits select the same tokens over the whole mini-batch with 1 micro-batch, with 4
micro-batches, and (Clip-Cov) on 2 gloo processes: recorded selections, logged selected fraction, final weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_training import REPO, fit

TOL = 1e-4  # as tests/training/test_distributed.py: float32 sums in another order through 4 AdamW steps

REWEIGHTS = {
    # band (0, 100): the positive-covariance tokens; 20% of the mini-batch's tokens drawn among them
    "clip_cov": ["toy_training.RecordingClipCov", "--model.reweight.clip_ratio", "0.2",
                 "--model.reweight.lower", "0.0", "--model.reweight.upper", "100.0"],
    "kl_cov": ["toy_training.RecordingKLCov", "--model.reweight.k_ratio", "0.1", "--model.reweight.coef", "0.5"],
}
# two updates per rollout batch: the second one scores the mini-batch again (the policy moved)
COMMON = ["--model.ppo_epochs", "2", "--trainer.max_steps", "4", "--data.seed_per_prompt", "true"]


def _args(name: str, record: Path) -> list[str]:
    return ["--model.reweight", *REWEIGHTS[name], "--model.reweight.record", str(record), *COMMON]


def _records(path: Path, rank: int = 0) -> list[list]:
    return [json.loads(line) for line in open(f"{path}.{rank}")]


def _logged(root: Path, key: str) -> list[float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return [float(r[key]) for r in rows]


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(next(root.rglob("last.ckpt")), weights_only=True, map_location="cpu")["state_dict"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("name", ["clip_cov", "kl_cov"])
def test_one_and_four_micro_batches_select_the_same_tokens(tmp_path, name):
    fit(tmp_path / "one", *_args(name, tmp_path / "one.jsonl"), name="one")
    fit(tmp_path / "four", *_args(name, tmp_path / "four.jsonl"), "--model.micro_batch_size", "4", name="four")
    one, four = _records(tmp_path / "one.jsonl"), _records(tmp_path / "four.jsonl")
    assert [r[0] for r in one] == [0, 1, 2, 3]  # 2 rollout batches x 2 updates
    assert all(r[2] for r in one)  # something selected at every update
    assert one == four
    frac = _logged(tmp_path / "one", "train/cov_selected_frac")
    assert frac == _logged(tmp_path / "four", "train/cov_selected_frac") and min(frac) > 0
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "four")) < TOL


def test_two_gloo_processes_select_the_tokens_of_one(tmp_path):
    fit(tmp_path / "one", *_args("clip_cov", tmp_path / "one.jsonl"), name="one")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(REPO)]))
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", "configs/smoke.yaml",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", *_args("clip_cov", tmp_path / "two.jsonl"),
           "--data.rewards", "toy_training.digit_reward",
           "--trainer.logger.init_args.save_dir", str(tmp_path / "two"), "--trainer.logger.init_args.name", "two"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _records(tmp_path / "one.jsonl")
    assert _records(tmp_path / "two.jsonl", 0) == _records(tmp_path / "two.jsonl", 1) == one
    assert _logged(tmp_path / "two", "train/cov_selected_frac") == _logged(tmp_path / "one", "train/cov_selected_frac")
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < TOL
