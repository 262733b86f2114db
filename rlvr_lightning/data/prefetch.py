"""Rollouts generated ahead of training (``data.rollout_ahead``, one-step-off): the queue and the training stream.

With ``rollout_ahead = k`` the training stream keeps ``k`` rollout batches ready beyond the one it hands out.
Policy version ``v`` is the weights after ``v`` rollout batches' updates (``RLVRModule`` syncs them into the
engine after every batch). When the trainer pulls batch ``j`` it holds version ``j``; the pull first generates
batch ``j + k`` from the engine's weights (version ``j``), then hands out batch ``j``, generated from version
``max(0, j - k)``. ``RolloutBatch.staleness`` is the difference, ``min(j, k)``: 0 on the first batch, ``k`` from
batch ``k`` on. ``k = 0`` is on-policy training: each batch is generated when it is pulled.

The batches generated at a pull are :meth:`RolloutQueue.fresh` until the next pull: ``RLVRModule`` attaches the
trainer's log-probs and entropy of the weights that sampled them (``RolloutBatch.old_logprobs``,
``old_entropy``) before its updates change those weights, so a stale batch is trained with the PPO ratio and the
truncated importance sampling of the policy that actually sampled it.

Generation stays in the pull, in the trainer's process and order (deterministic: prompts and sampling seeds come
from ``(seed, step)``, the weights from the version above). With an engine that shares the trainer's devices
(``HFEngine``, a colocated ``VLLMEngine``) nothing overlaps; the staleness is that of a pipeline in which the
engine generates batch ``j + k`` while the trainer updates on batch ``j``.

Resume: :meth:`RolloutQueue.state_dict` holds the queued batches with their log-probs (plain tensors, lists and
numbers, so checkpoints still load with ``torch.load(weights_only=True)``) and the count of batches handed out;
a resumed run trains on exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import IterableDataset

from rlvr_lightning.data.types import RolloutBatch

if TYPE_CHECKING:
    from rlvr_lightning.data.datamodule import RolloutDataModule

__all__ = ["RolloutQueue", "RolloutStream", "batch_from_state", "batch_state"]


def batch_state(batch: RolloutBatch) -> dict[str, Any]:
    """``batch`` as plain containers (tensors moved to the CPU), loadable with ``torch.load(weights_only=True)``."""
    return {f.name: _plain(getattr(batch, f.name)) for f in fields(batch)}


def batch_from_state(state: dict[str, Any]) -> RolloutBatch:
    """The :class:`RolloutBatch` that :func:`batch_state` saved."""
    return RolloutBatch(**state)


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):  # info: scalar statistics
        return {str(k): float(v) for k, v in value.items()}
    return list(value) if isinstance(value, list) else value


class RolloutQueue:
    """The rollout batches generated ahead of the trainer, oldest first.

    Args:
        ahead: ``k``, batches generated beyond the one handed out (0: none, on-policy).
    """

    def __init__(self, ahead: int = 0) -> None:
        if not isinstance(ahead, int) or ahead < 0:
            raise ValueError(f"rollout_ahead must be an integer >= 0, got {ahead!r}")
        self.ahead = ahead
        self.handed_out = 0  # batches handed to the trainer so far: the policy version it holds at the next pull
        # (batch, the prompt step it started at, the policy version it was generated from)
        self._queue: deque[tuple[RolloutBatch, int, int]] = deque()
        self._fresh: list[RolloutBatch] = []

    def __len__(self) -> int:
        return len(self._queue)

    def next_step(self, step: int) -> int:
        """The prompt step of the next batch to hand out (``step``, the prompt stream's position, if none waits)."""
        return self._queue[0][1] if self._queue else step

    def pull(self, generate: Callable[[], RolloutBatch], step: Callable[[], int]) -> RolloutBatch:
        """Generate until ``ahead + 1`` batches wait, then hand out the oldest with its ``staleness`` set.

        Args:
            generate: makes the next batch from the engine's current weights (advancing the prompt stream).
            step: the prompt stream's position (read before each generation).
        """
        self._fresh = []
        while len(self._queue) < self.ahead + 1:
            start = step()
            batch = generate()
            self._queue.append((batch, start, self.handed_out))
            self._fresh.append(batch)
        batch, _, version = self._queue.popleft()
        batch.staleness = self.handed_out - version
        self.handed_out += 1
        return batch

    def fresh(self) -> list[RolloutBatch]:
        """The batches generated ahead at the last pull and still queued: sampled from the weights the trainer
        holds until its next update (empty with ``ahead = 0``, and after a resume)."""
        queued = {id(b) for b, _, _ in self._queue}
        return [b for b in self._fresh if id(b) in queued]

    def state_dict(self) -> dict[str, Any]:
        """The queued batches (with the log-probs attached to them), their steps and versions, and the count of
        batches handed out."""
        return {
            "handed_out": self.handed_out,
            "batches": [batch_state(b) for b, _, _ in self._queue],
            "steps": [s for _, s, _ in self._queue],
            "versions": [v for _, _, v in self._queue],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.handed_out = int(state["handed_out"])
        queued = zip(state["batches"], state["steps"], state["versions"])
        self._queue = deque((batch_from_state(b), int(s), int(v)) for b, s, v in queued)
        self._fresh = []


class RolloutStream(IterableDataset):
    """Iterates the rest of the current data epoch, one rollout batch per ``next``, through the DataModule's
    :class:`RolloutQueue` (which may run into the next epoch's prompts).

    The engine sleeps once a pull's batches are made (vLLM frees the accelerator while the trainer works; a no-op
    for ``HFEngine``); it wakes for the next generation or weight sync.
    """

    def __init__(self, dm: RolloutDataModule) -> None:
        self.dm = dm

    def __iter__(self) -> Iterator[RolloutBatch]:
        dm, queue = self.dm, self.dm.rollouts
        dm._ensure_ready()
        end = (queue.next_step(dm.step) // dm.steps_per_epoch + 1) * dm.steps_per_epoch
        while queue.next_step(dm.step) < end:
            batch = queue.pull(dm.next_batch, lambda: dm.step)
            dm.engine.sleep()
            yield batch
