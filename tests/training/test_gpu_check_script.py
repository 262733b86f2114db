"""``scripts/gpu_check.sh`` in its CPU dry-run mode: the GPU check keeps working between GPU runs.

``ACCELERATOR=cpu SIZE=tiny`` runs the three parts with the tiny model: the bf16 FSDP2 fit (ModelParallelStrategy on
one process, HF engine, 8 steps), ``configs/one_gpu.yaml`` (HF engine, the shipped grade-school problems in place of
its dataset, ``STEPS`` steps) and one-step-off smoke fits in the pull and in the background; the script then prints
each part's summary from its ``metrics.csv``, the one-GPU recipe's reward / entropy / lambda per step with their
curves, and the background part's step-time ratio and weight difference.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from toy_training import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_prints_its_figures(tmp_path):
    env = dict(os.environ, ACCELERATOR="cpu", SIZE="tiny", STEPS="3", OMP_NUM_THREADS="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    fit_rows = list(csv.DictReader(open(next((tmp_path / "fit").rglob("metrics.csv")))))
    assert len(fit_rows) == 8  # max_steps
    recipe_rows = list(csv.DictReader(open(next((tmp_path / "one_gpu").rglob("metrics.csv")))))
    assert len(recipe_rows) == 3  # STEPS
    part1, part2 = proc.stdout.split("== 2. configs/one_gpu.yaml")
    part2, part3 = part2.split("== 3. one-step-off rollouts")
    for part in (part1, part2):
        tps = re.search(r"tokens/s \(steps 3\+\): mean (\d+)", part)
        assert tps and int(tps.group(1)) > 0, part
        assert "peak GPU memory: n/a (no GPU)" in part
        for key in ("time/rollout", "time/old_logprobs", "time/update", "time/step"):
            assert re.search(rf"{key}: \d+\.\d+ s", part), (key, part)
    # the recipe's curves: one line per step with reward, entropy and PAR's lambda (entropy-guided: 0, 0.05, 0.1)
    curve = re.findall(r"^\s+(\d+)(?:\.0)?\s+(\d\.\d{3})\s+(\d+\.\d{3})\s+(\d\.\d\d)$", part2, flags=re.M)
    assert [int(c[0]) for c in curve] == [1, 2, 3], part2
    assert [float(c[3]) for c in curve] == [0.0, 0.05, 0.1]
    assert all(float(c[2]) > 0 for c in curve)
    assert (tmp_path / "one_gpu" / "curves.png").stat().st_size > 0
    # part 3: the same run in the pull and in the background, to the bit on the CPU
    ratio = re.search(r"median step: in the pull (\d+\.\d+) s, in the background (\d+\.\d+) s \((\d+\.\d+)x\); "
                      r"largest final-weight difference (\S+)$", part3, flags=re.M)
    assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0, part3
    assert float(ratio.group(4)) == 0.0, part3
    assert part3.count("tokens/s (steps 3+)") == 2
