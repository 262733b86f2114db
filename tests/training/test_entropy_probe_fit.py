"""``model.entropy_probe_every`` inside a real fit: probed steps log the probe, the others NaN, and probing does
not change the training (the probe's gradients never touch the optimizer's)."""

from __future__ import annotations

import csv
import math

import torch
from toy_training import fit, state

KEYS = ("train/entropy_change_measured", "train/entropy_change_predicted", "train/entropy_drive_pos",
        "train/entropy_drive_neg")


def test_probe_logs_every_k_steps_and_leaves_the_run_unchanged(tmp_path):
    probed = fit(tmp_path, "--model.entropy_probe_every", "2", name="probed")
    plain = fit(tmp_path, name="plain")
    a, b = state(probed.model.policy), state(plain.model.policy)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [r for r in csv.DictReader(open(next((tmp_path / "probed").rglob("metrics.csv")))) if r.get(KEYS[0])]
    by_step = {int(float(r["rollout_step"])): r for r in rows}
    assert sorted(by_step) == [1, 2, 3]  # rollout steps 0, 1, 2 are logged after their update as 1, 2, 3
    for step, row in by_step.items():
        values = [float(row[k]) for k in KEYS]
        if step in (1, 3):  # rollout steps 0 and 2 were probed
            assert all(math.isfinite(v) for v in values), row
            assert values[0] != 0.0
        else:
            assert all(math.isnan(v) for v in values), row
    assert "train/entropy_change_measured" not in open(next((tmp_path / "plain").rglob("metrics.csv"))).readline()
