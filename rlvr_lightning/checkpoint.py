"""Crash-safe checkpoint files: atomic writes, ``weights_only`` loading, an atomic ``last.ckpt`` link.

A kill (SIGKILL, power loss, OOM killer) at any moment of a save leaves the previous checkpoint at the same path
whole and loadable:

- :class:`AtomicCheckpointIO` (the ``rlvr`` CLI installs it as the trainer's checkpoint plugin) writes each
  checkpoint to a temporary file in the target's folder, flushes and ``fsync``\\ s it, renames it onto the target
  with ``os.replace`` (atomic on POSIX) and ``fsync``\\ s the folder so the rename itself is durable. A failed save
  removes its temporary file and leaves the target untouched; a temporary file left by a killed process is removed
  by the next save to the same target. Loading uses ``torch.load(weights_only=True)``; a checkpoint that holds
  more than tensors and plain containers is loaded with ``weights_only=False`` only when the caller did not ask
  for ``weights_only=True``, and then with a warning naming the file.
- :class:`AtomicModelCheckpoint` is Lightning's ``ModelCheckpoint`` whose ``save_last="link"`` mode swaps the
  ``last.ckpt`` symlink atomically (Lightning 2.6 removes the old link first, leaving a window with no
  ``last.ckpt``). With ``save_last=True`` Lightning writes ``last.ckpt`` through the checkpoint plugin, so it is
  already atomic.
- :class:`AtomicModelParallelStrategy` is Lightning's ``ModelParallelStrategy`` (FSDP2) whose distributed
  checkpoints, folders of shards written by every rank, are published atomically: all ranks write into a new
  hidden folder ``.<name>.<token>.d`` beside the target, and once every rank is done, rank 0 points the target
  ``<name>`` at it by swapping a symlink with ``os.replace``. The folder it replaces is removed afterwards, and so
  is any folder left by a killed save.

Remote paths (``s3://``, ``gs://``, ...) go through Lightning's own fsspec transaction.
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.strategy import Strategy

__all__ = [
    "AtomicCheckpointIO",
    "AtomicModelCheckpoint",
    "AtomicModelParallelStrategy",
    "atomic_torch_save",
    "load_checkpoint_file",
    "publish_folder",
]

_TMP_SUFFIX = ".tmp"
_VERSION_SUFFIX = ".d"  # a published (or half-written) distributed checkpoint folder: .<name>.<token>.d


def _tmp_prefix(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.")


def _fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: str) -> None:
    """Remove temporary files of earlier saves to ``path`` whose writer died before renaming them."""
    for stale in glob.glob(glob.escape(_tmp_prefix(path)) + "*" + _TMP_SUFFIX):
        try:
            os.remove(stale)
        except OSError:
            pass


def _current_version(path: str) -> str | None:
    """The folder ``path`` links to, when it is one of ``path``'s published versions."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    ours = os.path.dirname(target) == os.path.dirname(os.path.abspath(path)) and os.path.basename(
        target
    ).startswith(os.path.basename(_tmp_prefix(path)))
    return target if ours else None


def _remove_stale_versions(path: str) -> None:
    """Remove ``path``'s hidden folders and links (``.<name>.*``) except the version ``path`` now links to."""
    keep = _current_version(path)
    for entry in glob.glob(glob.escape(_tmp_prefix(path)) + "*"):
        if keep is not None and os.path.realpath(entry) == keep and not os.path.islink(entry):
            continue
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                os.remove(entry)
            except OSError:
                pass


def publish_folder(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Make ``path`` a symlink to the complete checkpoint ``folder`` in one atomic step (``os.replace``).

    ``folder`` must be a sibling of ``path`` named ``.<name of path>.<token>.d``. Its files are synced (the
    shards again, cheaply: their writers already synced them), then a relative link to it replaces ``path``,
    and the parent folder is synced. The version ``path`` linked to before is removed. A plain folder at
    ``path`` (e.g. from Lightning's own ``ModelParallelStrategy``) is moved aside first: only in that one case
    is there a moment without ``path``.
    """
    folder, path = os.path.abspath(os.fspath(folder)), os.path.abspath(os.fspath(path))
    parent, name = os.path.dirname(path), os.path.basename(folder)
    if os.path.dirname(folder) != parent or not name.startswith(os.path.basename(_tmp_prefix(path))):
        raise ValueError(f"{folder!r} is not a version folder of {path!r} (expected {_tmp_prefix(path)}<token>.d)")
    for root, _, files in os.walk(folder):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)
    old = _current_version(path)
    link = folder.removesuffix(_VERSION_SUFFIX) + ".link"
    os.symlink(name, link)
    if os.path.isdir(path) and not os.path.islink(path):
        aside = folder.removesuffix(_VERSION_SUFFIX) + ".old"
        os.rename(path, aside)
        os.replace(link, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(link, path)
    _fsync_dir(parent)
    if old is not None and old != folder:
        shutil.rmtree(old, ignore_errors=True)


def atomic_torch_save(
    obj: Any, path: str | os.PathLike[str], *, save: Callable[[Any, Any], None] | None = None
) -> None:
    """``torch.save(obj, path)`` such that ``path`` always holds either its old content or the complete new one.

    Writes to ``.<name>.<random>.tmp`` in the same folder (so the rename stays on one file system), flushes and
    ``fsync``\\ s it, ``os.replace``\\ s it onto ``path``, then ``fsync``\\ s the folder. On any error the temporary
    file is removed and the error re-raised.

    Args:
        obj: what to save (a checkpoint dict).
        path: the target file; its folder is created if missing.
        save: the serializer ``save(obj, file_object)``; None: ``torch.save``.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = f"{_tmp_prefix(path)}{os.getpid()}-{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}"
    # os.open with mode 0o666 respects the umask, so the result has the permissions a plain open() would give
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            (torch.save if save is None else save)(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def load_checkpoint_file(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", weights_only: bool | None = None
) -> dict[str, Any]:
    """Load a checkpoint, with ``weights_only=True`` unless that is impossible and not demanded.

    Args:
        path: the checkpoint file.
        map_location: as in ``torch.load``.
        weights_only: True: only tensors and plain containers (an error otherwise); False: full unpickling (trusted
            files only); None: try True, and fall back to False with a warning if the file needs more.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if weights_only is not None:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"checkpoint {path!r} holds objects beyond tensors and plain containers, so it is loaded with "
            f"weights_only=False (full unpickling: load only files you trust). Reason: {first_line}",
            stacklevel=2,
        )
        return torch.load(path, map_location=map_location, weights_only=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint plugin: atomic, durable saves and ``weights_only`` loads (see the module docstring).

    Example:
        >>> import tempfile, os
        >>> io = AtomicCheckpointIO()
        >>> path = os.path.join(tempfile.mkdtemp(), "last.ckpt")
        >>> io.save_checkpoint({"global_step": 3}, path)
        >>> io.load_checkpoint(path)["global_step"]
        3
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (a local path) or via Lightning's fsspec transaction."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options, got {storage_options!r}"
            )
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path``; ``weights_only=None`` means True where the file allows it
        (see :func:`load_checkpoint_file`)."""
        if not _is_local_file_protocol(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        """Remove ``path``; a link to a published distributed checkpoint goes with the folder it links to."""
        if _is_local_file_protocol(path) and os.path.islink(path):
            version = _current_version(os.fspath(path))
            os.remove(path)
            if version is not None:
                shutil.rmtree(version, ignore_errors=True)
            return
        super().remove_checkpoint(path)


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``save_last="link"`` replaces the ``last.ckpt`` link atomically.

    Arguments are those of :class:`lightning.pytorch.callbacks.ModelCheckpoint`.
    """

    @staticmethod
    def _link_checkpoint(trainer: Any, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            if os.path.isdir(linkpath) and not os.path.islink(linkpath):
                ModelCheckpoint._link_checkpoint(trainer, filepath, linkpath)  # a sharded checkpoint folder
                return
            tmp = f"{_tmp_prefix(os.path.abspath(linkpath))}{os.getpid()}-{uuid.uuid4().hex[:8]}.link"
            try:
                os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), tmp)
                os.replace(tmp, linkpath)
            except OSError:
                if os.path.lexists(tmp):
                    os.remove(tmp)
                # no symlinks here (e.g. Windows without the privilege): an atomic copy instead
                atomic_torch_save(None, linkpath, save=lambda _, f: _copy_into(filepath, f))
            _fsync_dir(os.path.dirname(os.path.abspath(linkpath)))
        trainer.strategy.barrier()


def _copy_into(src: str, dst_file: Any) -> None:
    with open(src, "rb") as f:
        while chunk := f.read(1 << 20):
            dst_file.write(chunk)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` (FSDP2, tensor parallel) with atomically published checkpoints.

    Arguments are those of :class:`lightning.pytorch.strategies.ModelParallelStrategy`. With
    ``save_distributed_checkpoint=True`` (the default) a checkpoint is a folder of shards written by every rank;
    this strategy writes it to a new hidden folder beside the target and publishes it with
    :func:`publish_folder` only after every rank has finished, so a kill at any moment leaves the previous
    checkpoint whole. ``<run>/checkpoints/last.ckpt`` is then a symlink to ``.last.ckpt.<token>.d``; resume with
    ``--ckpt_path <run>/checkpoints/last.ckpt`` as usual (copy the folder with ``cp -rL`` to take the link's
    target along). With ``save_distributed_checkpoint=False`` rank 0 writes one file through the checkpoint plugin
    (:class:`AtomicCheckpointIO`), as with any strategy.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(filepath):
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        path = os.path.abspath(os.fspath(self.broadcast(os.fspath(filepath))))
        if not self._save_distributed_checkpoint:
            if os.path.islink(path):  # a published folder becomes a file: replace the link, not its target
                Strategy.save_checkpoint(self, checkpoint, path, storage_options)
                if self.is_global_zero:
                    _remove_stale_versions(path)
                self.barrier("rlvr_checkpoint_saved")
                return
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        token = self.broadcast(f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        folder = f"{_tmp_prefix(path)}{token}{_VERSION_SUFFIX}"
        if self.is_global_zero:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _remove_stale_versions(path)  # folders of saves that were killed before publishing
        self.barrier("rlvr_checkpoint_staged")
        super().save_checkpoint(checkpoint, folder, storage_options)  # every rank writes its shards
        self.barrier("rlvr_checkpoint_written")
        if self.is_global_zero:
            publish_folder(folder, path)
        self.barrier("rlvr_checkpoint_published")
