"""A real ``rlvr fit`` killed with SIGKILL in the middle of writing a checkpoint loses nothing but the current step.

The child process is the real CLI on the smoke config; only the checkpoint serializer is wrapped so that the second
save writes half of its bytes, flushes them, signals the test and waits to be killed. After the kill the previous
``last.ckpt`` must load with ``torch.load(weights_only=True)``, and ``--ckpt_path`` must resume from its step and
run to ``max_steps``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO, cli_args, metrics, run_cli

CHILD = """
import io, os, sys, time
import rlvr_lightning.checkpoint as ck

real = ck.atomic_torch_save
marker, kill_at = os.environ["RLVR_TEST_MARKER"], int(os.environ["RLVR_TEST_KILL_AT_SAVE"])
saves = 0

def half_then_hang(obj, f):
    buf = io.BytesIO()
    ck.torch.save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    with open(marker, "w") as m:
        m.write(str(obj["global_step"]))
    time.sleep(600)

def wrapped(obj, path, save=None):
    global saves
    saves += 1
    real(obj, path, save=half_then_hang if saves == kill_at else save)

ck.atomic_torch_save = wrapped
from rlvr_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"rlvr fit exited ({proc.returncode}) before the save to kill:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the checkpoint save")
        time.sleep(0.05)


def test_sigkill_during_checkpoint_write_then_resume(tmp_path):
    marker = tmp_path / "saving"
    env = {
        **os.environ,
        "RLVR_TEST_MARKER": str(marker),
        "RLVR_TEST_KILL_AT_SAVE": "2",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    args = cli_args(tmp_path, "--trainer.max_steps", "3", name="killed")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(marker, proc, timeout=240)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text() == "2"  # killed while writing the checkpoint of step 2

    (ckpt_dir,) = {p.parent for p in (tmp_path / "killed").rglob("last.ckpt")}
    leftovers = [p for p in ckpt_dir.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.")  # the half-written temporary
    with pytest.raises(RuntimeError, match="PytorchStreamReader failed"):
        torch.load(leftovers[0], weights_only=True)  # it really was cut in the middle
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["global_step"] == 1  # the previous checkpoint, whole
    assert last["rlvr"]["rollout_step"] == 1 and last["RolloutDataModule"]["step"] == 1

    # resume, writing checkpoints into the same folder as before
    cli, _ = run_cli(
        tmp_path,
        "--trainer.max_steps",
        "3",
        "--ckpt_path",
        str(ckpt_dir / "last.ckpt"),
        "--checkpoint.dirpath",
        str(ckpt_dir),
        name="resumed",
    )
    assert cli.trainer.global_step == 3
    assert cli.model.rollout_step == 3 and cli.datamodule.step == 3
    steps = sorted({int(r["step"]) for r in metrics(tmp_path / "resumed") if r.get("train/loss")})
    assert steps == [1, 2]  # only steps 2 and 3 (0-based 1, 2) were run again: nothing before the checkpoint
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 3
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # the stale temporary is gone
