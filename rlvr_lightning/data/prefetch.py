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

By default generation stays in the pull, in the trainer's thread and order (deterministic: prompts and sampling
seeds come from ``(seed, step)``, the weights from the version above), and nothing overlaps: the staleness is that
of a pipeline in which the engine generates batch ``j + k`` while the trainer updates on batch ``j``.

Background (``data.background_rollouts``): that pipeline for real. The pull starts the engine on batch ``j + k``'s
prompts in a worker thread (:class:`BackgroundGeneration`; an ``HFEngine`` on a GPU in a CUDA stream of its own)
and returns at once; the trainer updates on batch ``j`` meanwhile. The engine must hold weights of its own
(``owns_weights``: ``HFEngine(copy_weights=True)``, possibly on another device, or ``VLLMEngine`` with tensor
parallelism 1), and it stays awake. Before the next weight sync the trainer joins the worker
(:meth:`RolloutQueue.before_sync`): the batch is completed in the trainer's thread (rewards, the zero-variance policy
and any extra rollouts, collectives included, so all ranks stay in lockstep) and scored by the trainer's policy
with version ``j``'s trainable parameters put back for the call (:class:`ParamSnapshot`, taken at the sync that
gave the engine version ``j``). The batches, their versions and old log-probs equal those of the default mode; only
the time differs. Nothing is in flight between training steps, where checkpoints are written.

Resume: :meth:`RolloutQueue.state_dict` holds the queued batches with their log-probs (plain tensors, lists and
numbers, so checkpoints still load with ``torch.load(weights_only=True)``) and the count of batches handed out;
a resumed run trains on exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from rlvr_lightning.data.types import RolloutBatch

if TYPE_CHECKING:
    from rlvr_lightning.data.datamodule import RolloutDataModule

__all__ = ["BackgroundGeneration", "ParamSnapshot", "RolloutQueue", "RolloutStream", "Scorer", "attach_old_logprobs",
           "batch_from_state", "batch_state"]


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


class BackgroundGeneration:
    """One engine ``generate`` call at a time in a worker thread (on a CUDA device: in a stream of its own)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[tuple, Future] | None = None
        self._streams: dict[torch.device, Any] = {}

    def start(self, engine: Any, prompt_ids: Sequence[Sequence[int]], sampling: Any, seed: Any) -> None:
        """Start ``engine.generate(prompt_ids, sampling, seed=seed)`` in the worker (the engine's weights must not
        change until :meth:`take` returns). An engine whose ``model`` is a module on a CUDA device runs in a
        stream of its own (vLLM manages its streams itself)."""
        model = getattr(engine, "model", None)
        device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rlvr-rollout")
        stream = None
        if device.type == "cuda":  # the stream waits for the weights the trainer's stream just copied
            stream = self._streams.setdefault(device, torch.cuda.Stream(device))
            stream.wait_stream(torch.cuda.current_stream(device))

        def run() -> Any:
            if stream is None:
                return engine.generate(prompt_ids, sampling, seed=seed)
            with torch.cuda.stream(stream):
                out = engine.generate(prompt_ids, sampling, seed=seed)
            stream.synchronize()
            return out

        self._pending = (_call_key(prompt_ids, sampling, seed), self._pool.submit(run))

    def take(self, prompt_ids: Sequence[Sequence[int]], sampling: Any, seed: Any) -> Any | None:
        """The started call's result (waiting for it) if it was made with these arguments, else None."""
        if self._pending is None or self._pending[0] != _call_key(prompt_ids, sampling, seed):
            return None
        future = self._pending[1]
        self._pending = None
        return future.result()

    def close(self) -> None:
        """Wait for a started call (its result dropped) and stop the worker."""
        if self._pending is not None:
            self._pending[1].exception()  # waits; an error there does not matter any more
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


Scorer = Callable[[torch.nn.Module, RolloutBatch], tuple[Tensor, Tensor]]
"""How the trainer scores a batch under a model: ``(model, batch) -> (logp, entropy)``, each ``(B, T)``."""


class ParamSnapshot:
    """A copy of a policy's trainable parameters (the others do not change in training), to score with them later.

    Each copy is a ``clone`` of the parameter, so a sharded (FSDP2 ``DTensor``) parameter is copied shard by shard:
    the snapshot costs each rank the size of its trainable shards. FSDP2 modules are resharded before the
    parameters are read or written (an unsharded root would otherwise show its gathered copies, and keep them).
    """

    def __init__(self) -> None:
        self.tensors: list[Tensor] = []

    def take(self, policy: torch.nn.Module) -> None:
        """Copy ``policy``'s trainable parameters now."""
        _reshard(policy)
        with torch.no_grad():
            self.tensors = [p.detach().clone() for p in policy.parameters() if p.requires_grad]

    @contextmanager
    def restored(self, policy: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``policy`` with the snapshot's values in its trainable parameters (swapped in place, one parameter's
        temporary at a time), and its own values back afterwards."""
        _reshard(policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        if len(params) != len(self.tensors):
            raise RuntimeError(f"the snapshot holds {len(self.tensors)} parameters, the policy has {len(params)} "
                               "trainable ones: take() it at the weight sync that gave the engine its weights")
        self._swap(params)
        try:
            yield policy
        finally:
            _reshard(policy)  # the forward under the snapshot left gathered copies of it
            self._swap(params)

    def _swap(self, params: list[Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(params, self.tensors):
                held = p.detach().clone()
                p.copy_(s)
                s.copy_(held)


def _reshard(policy: torch.nn.Module) -> None:
    """Reshard every FSDP2 module of ``policy`` (its registered parameters are then the sharded ones)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return
    for module in policy.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def attach_old_logprobs(batch: RolloutBatch, score: Scorer | None, policy: torch.nn.Module,
                        snapshot: ParamSnapshot) -> None:
    """Give ``batch`` (generated in the background from the weights of ``snapshot``) their log-probs and entropy,
    scored by ``score`` on ``policy`` with the snapshot's parameters, kept on the CPU."""
    if score is None:
        raise ValueError("a batch generated in the background is scored by the trainer: sync_weights(policy, score)")
    with snapshot.restored(policy) as sampled:
        logp, entropy = score(sampled, batch.to(next(policy.parameters()).device))
    batch.old_logprobs, batch.old_entropy = logp.cpu(), entropy.cpu()


def _call_key(prompt_ids: Sequence[Sequence[int]], sampling: Any, seed: Any) -> tuple:
    seeds = tuple(seed) if isinstance(seed, (list, tuple)) else seed
    return tuple(map(tuple, prompt_ids)), repr(sampling), seeds


class RolloutQueue:
    """The rollout batches generated ahead of the trainer, oldest first.

    Args:
        ahead: ``k``, batches generated beyond the one handed out (0: none, on-policy).
        background: generate the batch ``k`` steps ahead in a worker thread while the trainer updates
            (:class:`BackgroundGeneration`; needs ``ahead >= 1``).
    """

    def __init__(self, ahead: int = 0, background: bool = False) -> None:
        if not isinstance(ahead, int) or ahead < 0:
            raise ValueError(f"rollout_ahead must be an integer >= 0, got {ahead!r}")
        if background and ahead < 1:
            raise ValueError("data.background_rollouts generates the next batch while the trainer updates on this "
                             "one: it needs data.rollout_ahead >= 1 (got 0)")
        self.ahead = ahead
        self.worker = BackgroundGeneration() if background else None
        self.snapshot = ParamSnapshot()  # background: the trainable parameters the engine holds
        self._started: tuple[int, int] | None = None  # (prompt step, policy version) of the batch in the worker
        self.handed_out = 0  # batches handed to the trainer so far: the policy version it holds at the next pull
        # (batch, the prompt step it started at, the policy version it was generated from)
        self._queue: deque[tuple[RolloutBatch, int, int]] = deque()
        self._fresh: list[RolloutBatch] = []

    def __len__(self) -> int:
        return len(self._queue)

    def next_step(self, step: int) -> int:
        """The prompt step of the next batch to hand out (``step``, the prompt stream's position, if none waits)."""
        return self._queue[0][1] if self._queue else step

    def pull(self, generate: Callable[[], RolloutBatch], step: Callable[[], int],
             start: Callable[[], None] | None = None) -> RolloutBatch:
        """Generate until ``ahead + 1`` batches wait (in the background: ``ahead``, then ``start`` the next one),
        then hand out the oldest with its ``staleness`` set.

        Args:
            generate: makes the next batch from the engine's current weights (advancing the prompt stream).
            step: the prompt stream's position (read before each generation).
            start: starts the engine on the next batch's prompts in :attr:`worker` (background only).
        """
        self._fresh = []
        while len(self._queue) < self.ahead + 1 - (self.worker is not None):
            first = step()
            batch = generate()
            self._queue.append((batch, first, self.handed_out))
            self._fresh.append(batch)
        if self.worker is not None:
            if start is None:
                raise ValueError("a background RolloutQueue needs `start` at every pull")
            start()
            self._started = (step(), self.handed_out)
        batch, _, version = self._queue.popleft()
        batch.staleness = self.handed_out - version
        self.handed_out += 1
        return batch

    def check_engine(self, engine: Any) -> None:
        """Refuse, for background rollouts, an engine without weights of its own (``owns_weights``)."""
        if self.worker is not None and not getattr(engine, "owns_weights", False):
            raise ValueError(f"data.background_rollouts needs an engine with weights of its own (HFEngine(copy_"
                             f"weights=True), VLLMEngine with tensor_parallel_size 1); this {type(engine).__name__} "
                             "has none")

    def before_sync(self, generate: Callable[[], RolloutBatch], score: Scorer | None, policy: torch.nn.Module) -> None:
        """Before the engine gets ``policy``'s weights: complete the batch the last pull started in the background
        (``generate`` picks up the worker's samples for its first rollout), score it under the weights that sampled
        it (:func:`attach_old_logprobs`) and queue it; then snapshot the weights the engine is about to get."""
        if self.worker is None:
            return
        if self._started is not None:
            (first, version), self._started = self._started, None
            batch = generate()
            attach_old_logprobs(batch, score, policy, self.snapshot)
            self._queue.append((batch, first, version))
        self.snapshot.take(policy)

    def close(self) -> None:
        """Stop the background worker (waiting for what it runs)."""
        self._started = None
        if self.worker is not None:
            self.worker.close()

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
            batch = queue.pull(dm.next_batch, lambda: dm.step, dm.start_rollout if queue.worker else None)
            if queue.worker is None:  # in the background it is generating now
                dm.engine.sleep()
            yield batch
