"""Lightning conventions of the ``rlvr`` command: logs and checkpoints under ``trainer.default_root_dir``,
TensorBoard as the alternative to CSV (offline), a progress bar of rollout steps out of the run's total, and no
third-party noise on the console."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from toy_training import REPO, SMOKE

from rlvr_lightning.progress import RolloutProgressBar


def _fit(*extra: str):
    from rlvr_lightning.cli import cli_main

    cwd, argv = os.getcwd(), sys.argv
    os.chdir(REPO)  # the smoke config names assets/ relative to the repository
    sys.argv = ["rlvr"]
    try:
        return cli_main(["fit", "--config", SMOKE, "--trainer.max_steps", "2",
                         "--data.rewards", "toy_training.digit_reward", *extra])
    finally:
        os.chdir(cwd)
        sys.argv = argv


def test_logs_and_checkpoints_go_under_default_root_dir(tmp_path):
    cli = _fit("--trainer.default_root_dir", str(tmp_path))
    run = tmp_path / "smoke" / "version_0"  # the config's logger name, under the root dir
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [float(r["rollout_step"]) for r in rows if r.get("train/entropy")] == [1.0, 2.0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert cli.trainer.logger.save_dir == str(tmp_path)


def test_an_explicit_save_dir_still_wins(tmp_path):
    cli = _fit("--trainer.default_root_dir", str(tmp_path / "root"),
               "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"))
    assert (tmp_path / "logs" / "smoke" / "version_0" / "metrics.csv").is_file()
    assert not (tmp_path / "root" / "smoke").exists()
    assert cli.trainer.logger.save_dir == str(tmp_path / "logs")


def test_tensorboard_logger_writes_the_training_curves(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit("--trainer.default_root_dir", str(tmp_path),
         "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.init_args.name", "tb")
    [run] = (tmp_path / "tb").glob("version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/entropy", "train/reward_mean", "train/lambda", "rollout_step"} <= tags
    assert [e.value for e in events.Scalars("rollout_step")] == [1.0, 2.0]
    assert all(e.value > 0 for e in events.Scalars("train/entropy"))  # a random model's tokens have entropy
    assert (run / "checkpoints" / "last.ckpt").is_file()


NOISE = ("seamless cloud logging", "dataloader_iter", "LeafSpec", "Timeout is disabled", "Epoch 0/-2")


def test_progress_bar_counts_rollout_steps_and_the_console_is_quiet(tmp_path):
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", SMOKE, "--trainer.max_steps", "3",
           "--trainer.enable_progress_bar", "true", "--trainer.limit_val_batches", "0",
           "--trainer.default_root_dir", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "rollout steps (data epoch 0): 100%" in console and "3/3" in console
    assert not [n for n in NOISE if n in console], console[-3000:]


def test_the_bar_is_added_only_when_the_progress_bar_is_on(tmp_path):
    on = _fit("--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "true")
    assert sum(isinstance(c, RolloutProgressBar) for c in on.trainer.callbacks) == 1
    assert on.trainer.progress_bar_callback.train_progress_bar.total == 2  # max_steps 2, one update a batch
    off = _fit("--trainer.default_root_dir", str(tmp_path))  # the smoke config turns the bar off
    assert off.trainer.progress_bar_callback is None


@pytest.mark.parametrize("max_steps,max_epochs,per_epoch,updates,expected", [
    (500, -1, 34, (1, 1), 500),          # the paper's configs: max_steps counts optimizer steps
    (2000, -1, 34, (1, 2), 1000),        # N = 2 updates per rollout batch
    (7, -1, 34, (2, 2), 2),              # a last, partial rollout batch counts
    (-1, 3, 34, (1, 1), 102),            # bounded by data epochs only
    (-1, -1, 34, (1, 1), None),          # unbounded
    (-1, 3, float("inf"), (1, 1), None),
])
def test_total_rollout_steps(max_steps, max_epochs, per_epoch, updates, expected):
    from types import SimpleNamespace

    from rlvr_lightning.progress import total_rollout_steps

    trainer = SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, num_training_batches=per_epoch)
    module = SimpleNamespace(hparams={"ppo_epochs": updates[0], "num_mini_batches": updates[1]})
    assert total_rollout_steps(trainer, module) == expected
