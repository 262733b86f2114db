"""AtomicCheckpointIO and AtomicModelCheckpoint: a failed or killed save never damages the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from rlvr_lightning import checkpoint as ckpt_mod
from rlvr_lightning.checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint, atomic_torch_save


class _Opaque:
    """A class that ``torch.load(weights_only=True)`` refuses to unpickle."""

    def __init__(self, value: int) -> None:
        self.value = value


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_roundtrip_leaves_no_temporary_files(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    state = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 7, "nested": [1, "a", None]}
    io.save_checkpoint(state, path)
    io.save_checkpoint({**state, "global_step": 8}, path)  # overwrite in place
    assert _listing(path.parent) == ["last.ckpt"]
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 8 and loaded["nested"] == [1, "a", None]
    torch.testing.assert_close(loaded["state_dict"]["w"], state["state_dict"]["w"], rtol=0, atol=0)
    # the file's permissions follow the umask like a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_save_failing_halfway_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def save_half_then_die(obj, f):
        f.write(b"PK\x03\x04 partial checkpoint bytes" * 1000)  # half a file on disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["last.ckpt"]  # the temporary file was removed
    assert io.load_checkpoint(path, weights_only=True)["global_step"] == 1


def test_fsync_of_file_and_folder_happens_before_and_after_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        ckpt_mod.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    atomic_torch_save({"x": 1}, tmp_path / "a.ckpt")
    assert events == ["fsync", "replace", "fsync"]


def test_stale_temporary_of_killed_writer_is_removed_by_next_save(tmp_path):
    """A real process killed by SIGKILL in the middle of a write leaves the target intact and a stale temporary."""
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, path)
    child = textwrap.dedent(
        f"""
        import sys, time, torch
        from rlvr_lightning.checkpoint import atomic_torch_save
        def slow_save(obj, f):
            f.write(b"x" * 4096); f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_torch_save({{"global_step": 2}}, {str(path)!r}, save=slow_save)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    stale = [n for n in _listing(tmp_path) if n != "last.ckpt"]
    assert len(stale) == 1 and stale[0].startswith(".last.ckpt.") and stale[0].endswith(".tmp")
    assert torch.load(path, weights_only=True)["global_step"] == 1
    atomic_torch_save({"global_step": 3}, path)
    assert _listing(tmp_path) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["global_step"] == 3


def test_weights_only_by_default_with_warned_fallback(tmp_path):
    io = AtomicCheckpointIO()
    plain, opaque = tmp_path / "plain.ckpt", tmp_path / "opaque.ckpt"
    io.save_checkpoint({"w": torch.ones(2)}, plain)
    io.save_checkpoint({"obj": _Opaque(5)}, opaque)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain checkpoint loads with weights_only=True, silently
        assert io.load_checkpoint(plain)["w"].tolist() == [1.0, 1.0]
    with pytest.warns(UserWarning, match=r"opaque\.ckpt.*weights_only=False"):
        assert io.load_checkpoint(opaque)["obj"].value == 5
    with pytest.raises(pickle.UnpicklingError):
        io.load_checkpoint(opaque, weights_only=True)  # an explicit request is honoured
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        io.load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, plain, storage_options={"x": 1})


def test_link_last_is_swapped_without_a_gap(tmp_path, monkeypatch):
    """``save_last="link"``: the old ``last.ckpt`` link is never removed before the new one exists."""
    a, b, last = tmp_path / "step=1.ckpt", tmp_path / "step=2.ckpt", tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, a)
    atomic_torch_save({"global_step": 2}, b)
    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None))
    AtomicModelCheckpoint._link_checkpoint(trainer, str(a), str(last))
    assert os.readlink(last) == "step=1.ckpt"
    real_remove = os.remove

    def guarded_remove(p):
        assert os.path.abspath(p) != str(last), "last.ckpt removed before its replacement exists"
        real_remove(p)

    monkeypatch.setattr(os, "remove", guarded_remove)
    AtomicModelCheckpoint._link_checkpoint(trainer, str(b), str(last))
    assert os.readlink(last) == "step=2.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert _listing(tmp_path) == ["last.ckpt", "step=1.ckpt", "step=2.ckpt"]


def test_lightning_save_last_goes_through_the_plugin(tmp_path):
    """With ``save_last=True`` Lightning writes ``last.ckpt`` through the checkpoint plugin (so atomically)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    saved: list[str] = []

    class Spy(AtomicCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            saved.append(os.path.basename(path))
            super().save_checkpoint(checkpoint, path, storage_options)

    cb = AtomicModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        plugins=[Spy()],
        accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert saved and set(saved) == {"last.ckpt"}
    assert _listing(tmp_path) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 2
