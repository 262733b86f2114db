"""``scripts/gpu_check.sh`` in its CPU dry-run mode: the GPU check keeps working between GPU runs.

``ACCELERATOR=cpu SIZE=tiny`` runs the same bf16 FSDP2 fit (ModelParallelStrategy on one process, HF engine, 8
steps) with the tiny config; the script then prints its summary from the run's ``metrics.csv``.
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
    env = dict(os.environ, ACCELERATOR="cpu", SIZE="tiny", OMP_NUM_THREADS="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert len(rows) == 8  # max_steps
    tps = re.search(r"tokens/s \(steps 3\+\): mean (\d+)", proc.stdout)
    assert tps and int(tps.group(1)) > 0, proc.stdout
    assert "peak GPU memory: n/a (no GPU)" in proc.stdout
    for key in ("time/rollout", "time/old_logprobs", "time/update", "time/step"):
        assert re.search(rf"{key}: \d+\.\d+ s", proc.stdout), (key, proc.stdout)
