"""plot_runs and plot_reliability on fake runs written in Lightning's CSVLogger format."""

from __future__ import annotations

import csv
import math

import pytest
import torch

pytest.importorskip("matplotlib")

from rlvr_lightning.plotting import ema_smooth, plot_reliability, plot_runs, read_metrics  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(root, name: str, with_lambda: bool, seed: int) -> str:
    """A Lightning-style sparse metrics.csv: train rows every step, val rows every 5 steps on own rows."""
    run = root / name
    version = run / "lightning_logs" / "version_0"
    version.mkdir(parents=True)
    cols = [
        "epoch",
        "step",
        "train/entropy",
        "train/reward_mean",
        "train/accuracy",
        "train/clip_frac_low",
        "train/clip_frac_high",
        "train/response_length_mean",
        "val/accuracy",
    ]
    if with_lambda:
        cols.insert(5, "train/lambda")
    g = torch.Generator().manual_seed(seed)
    with open(version / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for step in range(20):
            row = {c: "" for c in cols}
            row.update(
                {
                    "epoch": 0,
                    "step": step,
                    "train/entropy": 0.8 * math.exp(-step / 8),
                    "train/reward_mean": float(torch.rand((), generator=g)),
                    "train/accuracy": step / 20,
                    "train/clip_frac_low": 0.01,
                    "train/clip_frac_high": 0.02,
                    "train/response_length_mean": 100 + step,
                }
            )
            if with_lambda:
                row["train/lambda"] = min(1.0, 0.05 * step)
            if step == 7:
                row["train/entropy"] = "nan"  # a NaN cell is skipped
            w.writerow(row)
            if step % 5 == 4:
                w.writerow({**{c: "" for c in cols}, "epoch": 0, "step": step, "val/accuracy": 0.3})
    return str(run)


def _check_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_plot_runs_draws_one_panel_per_key(tmp_path):
    runs = [_write_run(tmp_path, "grpo", False, 0), _write_run(tmp_path, "par", True, 1)]
    out = tmp_path / "plots" / "runs.png"
    titles = plot_runs(runs, str(out), ema=0.6)
    assert titles == [
        "train/entropy",
        "train/reward_mean",
        "train/accuracy",
        "train/lambda",
        "train/clip_frac*",
        "train/response_length_mean",
    ]
    _check_png(out)
    # keys no run has are left out; a run missing a key (lambda) still plots the others
    assert plot_runs(runs, str(tmp_path / "b.png"), keys=["train/lambda", "nope", "val/accuracy"]) == [
        "train/lambda",
        "val/accuracy",
    ]
    with pytest.raises(ValueError, match="none of the keys"):
        plot_runs(runs, str(tmp_path / "c.png"), keys=["nope"])
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_runs([str(tmp_path / "missing")], str(tmp_path / "d.png"))


def test_read_metrics_skips_sparse_and_nan_cells(tmp_path):
    series = read_metrics(_write_run(tmp_path, "r", True, 0))
    assert [s for s, _ in series["train/entropy"]] == [float(s) for s in range(20) if s != 7]
    assert [s for s, _ in series["val/accuracy"]] == [4.0, 9.0, 14.0, 19.0]


def test_ema_smooth_matches_recursion():
    xs = [float(v) for v in torch.rand(30, generator=torch.Generator().manual_seed(3))]
    want = [xs[0]]
    for x in xs[1:]:
        want.append(0.6 * want[-1] + 0.4 * x)
    got = ema_smooth(xs, alpha=0.6)
    assert len(got) == len(xs) and max(abs(a - b) for a, b in zip(got, want)) < 1e-12
    assert ema_smooth(xs, alpha=0.0) == xs
    with pytest.raises(ValueError, match="alpha"):
        ema_smooth(xs, alpha=1.0)


def test_plot_reliability_writes_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(300, generator=g)
    correct = torch.rand(300, generator=g) < conf * 0.7
    out = tmp_path / "rel.png"
    titles = plot_reliability(conf, correct, str(out), n_bins=10)
    assert titles[0].startswith("reliability (ECE ") and titles[1] == "responses per bin"
    _check_png(out)


def test_read_metrics_uses_rollout_step_and_drops_repeated_rows(tmp_path):
    path = tmp_path / "run" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    # as self.log wrote them: Lightning's step counts the phantom batch at a data epoch's end, the last row again
    rows = [
        {"epoch": 0, "step": 0, "rollout_step": 1, "train/entropy": 0.5, "val/x": ""},
        {"epoch": 0, "step": 1, "rollout_step": 2, "train/entropy": 0.4, "val/x": ""},
        {"epoch": 0, "step": 2, "rollout_step": 2, "train/entropy": 0.4, "val/x": ""},
        {"epoch": 0, "step": 2, "rollout_step": 2, "train/entropy": "", "val/x": 0.9},
        {"epoch": 1, "step": 3, "rollout_step": 3, "train/entropy": 0.3, "val/x": ""},
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    series = read_metrics(tmp_path / "run")
    assert series["train/entropy"] == [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]
    assert series["val/x"] == [(2.0, 0.9)]
    assert "rollout_step" not in series
