"""``step_log.publish`` hands a step's scalars to Lightning as ``self.log(on_step=True, sync_dist=True)`` does:
the same CSV rows (steps kept by ``log_every_n_steps``), callback, logged and progress-bar metrics, and the same
mean / max over 2 DDP processes; Lightning's own ``self.log`` of the same values is the reference."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toy_training import REPO

PROBE = Path(__file__).parent / "publish_probe.py"


def _rows(out: Path) -> dict[int, dict[str, float]]:
    """The CSV log merged by step: ``{step: {key: value}}`` (each path writes rows of its own)."""
    merged: dict[int, dict[str, float]] = {}
    for r in csv.DictReader(open(next(out.rglob("metrics.csv")))):
        merged.setdefault(int(r["step"]), {}).update({k: float(v) for k, v in r.items() if v != "" and k != "step"})
    return merged


@pytest.mark.parametrize("devices", [1, 2])
def test_publish_logs_what_self_log_logs(tmp_path, devices):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(PROBE), str(tmp_path), str(devices)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path)
    # 5 batches a data epoch (3 per rank under 2 processes), 2 epochs; log_every_n_steps=2 keeps the odd steps
    per_epoch = 5 if devices == 1 else 3
    assert sorted(rows) == list(range(1, 2 * per_epoch, 2))
    for step, row in rows.items():
        s = step % per_epoch  # the batch index within the data epoch
        expected = {"x": (devices - 1) / 2 + s, "length_max": 10.0 * (devices - 1) - s, "lr": 0.25 * s}
        for k, v in expected.items():
            assert row[f"a/{k}"] == row[f"b/{k}"] == pytest.approx(v, abs=1e-6), (step, k, row)
        assert row["epoch"] == step // per_epoch
    result = json.loads((tmp_path / "result.json").read_text())
    for kind in ("callback", "logged", "pbar"):
        got = result[kind]
        a = {k[2:]: v for k, v in got.items() if k.startswith("a/")}
        b = {k[2:]: v for k, v in got.items() if k.startswith("b/")}
        assert a == b and a, (kind, got)
    assert set(result["pbar"]) == {"a/x", "b/x"}


def test_a_fit_logs_one_training_row_per_rollout_step_across_data_epochs(tmp_path):
    """The module's step metrics reach the CSV log, callback metrics and progress bar through ``publish``; an
    8-prompt training set (2 rollout batches a data epoch) ends a data epoch twice in 5 steps, and no training row
    is repeated there (``self.log`` left a copy of the last row at each phantom end-of-epoch batch)."""
    from toy_training import fit

    data = tmp_path / "eight.jsonl"
    data.write_text("".join((REPO / "assets" / "arithmetic" / "train.jsonl").read_text().splitlines(True)[:8]))
    cli = fit(tmp_path, "--trainer.max_steps", "5", "--data.train_files", str(data))
    train = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("train/loss")]
    assert [float(r["rollout_step"]) for r in train] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [int(r["step"]) for r in train] == [0, 1, 3, 4, 6]  # Lightning's step counts the phantom batches
    assert [int(r["epoch"]) for r in train] == [0, 0, 1, 1, 2]
    last = train[-1]
    trainer = cli.trainer
    for key in ("train/loss", "train/entropy", "train/reward_mean", "train/response_length_max", "time/step"):
        assert float(trainer.callback_metrics[key]) == pytest.approx(float(last[key]), rel=1e-6), key
    assert {"train/reward_mean", "train/entropy"} <= set(trainer.progress_bar_metrics)
