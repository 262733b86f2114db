"""Distributed (FSDP2, sharded) checkpoints are published atomically, and a run killed mid-save resumes exactly.

``AtomicModelParallelStrategy`` writes each checkpoint's shards into a hidden ``.<name>.<token>.d`` folder and
points ``<name>`` at it with an atomic symlink swap once every rank is done. The end-to-end test runs the FSDP2
smoke config on 2 gloo processes with ``save_distributed_checkpoint: true``: the second save writes all its shards,
then hangs before publishing, and both processes are SIGKILLed. ``last.ckpt`` must still be step 1's checkpoint,
and resuming from it must end with the same weights as a run that was never interrupted.
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
from reliability_helpers import REPO
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from rlvr_lightning.checkpoint import AtomicCheckpointIO, publish_folder

CHILD = """
import os, sys, time
import lightning.pytorch.strategies.model_parallel as mp

real = mp._distributed_checkpoint_save
marker, hang_at = os.environ["RLVR_TEST_MARKER"], int(os.environ["RLVR_TEST_HANG_AT_SAVE"])
saves = 0

def save_then_hang(state, path):
    global saves
    saves += 1
    real(state, path)
    if saves == hang_at:  # every shard is written; the checkpoint is not published yet
        with open(f"{marker}.{os.environ.get('LOCAL_RANK', '0')}", "w") as m:
            m.write(str(path))
        time.sleep(600)

mp._distributed_checkpoint_save = save_then_hang
from rlvr_lightning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _args(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", "configs/smoke_fsdp2.yaml", "--trainer.strategy.save_distributed_checkpoint", "true",
            "--data.rewards", "toy_training.digit_reward", "--trainer.logger.init_args.save_dir", str(root), *extra]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "tests" / "training"), str(REPO)])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)


def _run(root: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", *_args(root, *extra)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _weights(link: Path, out: Path) -> dict[str, torch.Tensor]:
    dcp_to_torch_save(link, out)
    return torch.load(out, weights_only=True)["state_dict"]


def _meta_step(link: Path) -> int:
    return torch.load(link / "meta.pt", weights_only=True)["global_step"]


def test_kill_before_publishing_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    _run(straight, "--trainer.max_steps", "3")

    killed = tmp_path / "killed"
    marker = tmp_path / "hanging"
    child = tmp_path / "child.py"  # a file, not `python -c`: Lightning starts rank 1 by re-running the command
    child.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(child), *_args(killed, "--trainer.max_steps", "3")], cwd=REPO,
                            env=_env(RLVR_TEST_MARKER=str(marker), RLVR_TEST_HANG_AT_SAVE="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not all(Path(f"{marker}.{r}").exists() for r in (0, 1)):
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"rlvr fit exited ({proc.returncode}) before the save to kill:\n{out[-3000:]}")
            assert time.monotonic() < deadline, "timed out waiting for the checkpoint save"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    (ckpt_dir,) = {p.parent for p in killed.rglob("last.ckpt")}
    last = ckpt_dir / "last.ckpt"
    assert last.is_symlink() and _meta_step(last) == 1  # step 2's save was never published
    unpublished = Path(Path(f"{marker}.0").read_text())
    assert unpublished.parent == ckpt_dir and unpublished.name.startswith(".last.ckpt.")
    assert (unpublished / ".metadata").is_file() and unpublished != last.resolve()

    _run(tmp_path / "resumed", "--trainer.max_steps", "3", "--ckpt_path", str(last),
         "--checkpoint.dirpath", str(ckpt_dir))
    assert _meta_step(last) == 3
    # the unpublished folder and the replaced version are gone: the link and its one version remain
    assert sorted(p.name for p in ckpt_dir.iterdir()) == sorted(["last.ckpt", last.resolve().name])

    want = _weights(next(straight.rglob("last.ckpt")), tmp_path / "straight.pt")
    got = _weights(last, tmp_path / "resumed.pt")
    assert want.keys() == got.keys() and len(want) > 0
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


def _version(path: Path, token: str, step: int) -> Path:
    folder = path.parent / f".{path.name}.{token}.d"
    folder.mkdir()
    (folder / "meta.pt").write_text(str(step))
    return folder


def test_publish_folder_swaps_versions_and_cleans_up(tmp_path):
    path = tmp_path / "last.ckpt"
    first = _version(path, "a", 1)
    publish_folder(first, path)
    assert path.is_symlink() and os.readlink(path) == first.name  # relative: the folder can be moved
    assert (path / "meta.pt").read_text() == "1"

    second = _version(path, "b", 2)
    publish_folder(second, path)
    assert (path / "meta.pt").read_text() == "2"
    assert not first.exists()  # the replaced version is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", second.name])

    with pytest.raises(ValueError, match="not a version folder"):
        publish_folder(tmp_path, path)


def test_publish_folder_replaces_a_plain_sharded_folder(tmp_path):
    """A folder written by Lightning's own strategy at the same path is replaced by the published version."""
    path = tmp_path / "last.ckpt"
    path.mkdir()
    (path / "meta.pt").write_text("0")
    new = _version(path, "c", 1)
    publish_folder(new, path)
    assert path.is_symlink() and (path / "meta.pt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", new.name])


def test_removing_a_published_checkpoint_removes_its_folder(tmp_path):
    path = tmp_path / "epoch=0-step=1.ckpt"
    publish_folder(_version(path, "d", 1), path)
    other = tmp_path / "last.ckpt"
    os.symlink(path.name, other)  # save_last="link": a link to the checkpoint, not one of its versions
    AtomicCheckpointIO().remove_checkpoint(str(other))
    assert path.is_symlink() and (path / "meta.pt").exists()  # only the link went
    AtomicCheckpointIO().remove_checkpoint(str(path))
    assert list(tmp_path.iterdir()) == []
