"""The data contracts between rollout engines, the DataModule and the LightningModule.

``RolloutEngine`` is what the DataModule needs from a generator; ``RolloutBatch`` is what a rollout produces;
``RolloutSource`` is everything ``RLVRModule`` reads from its DataModule.

Shapes: P prompts, G samples per prompt (group size), B = P * G sequences, Tp prompt tokens, T response tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Iterable, Literal, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from rlvr_lightning.data.evaluation import EvalSet


@dataclass(frozen=True)
class SamplingConfig:
    """How an engine samples. Defaults follow the paper: temperature 1.0, top-p 1.0.

    Attributes:
        n: samples per prompt (the group size G).
        temperature: softmax temperature (0 means greedy).
        top_p: nucleus mass.
        top_k: keep the k most likely tokens (``-1``: all).
        max_new_tokens: response length cap; a response that reaches it is ``truncated``.
        logprobs: also return the sampling policy's log-prob of each generated token.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    logprobs: bool = False


@dataclass
class Sample:
    """One generated response.

    Attributes:
        token_ids: generated tokens, EOS included when it was produced, padding never.
        logprobs: the sampling policy's log-prob of each token in ``token_ids`` (``None`` if not asked for).
        finish_reason: ``"stop"`` (EOS or stop string) or ``"length"`` (hit ``max_new_tokens``).
    """

    token_ids: list[int]
    logprobs: list[float] | None = None
    finish_reason: Literal["stop", "length"] = "stop"


@runtime_checkable
class RolloutEngine(Protocol):
    """What the DataModule needs from a generator (``HFEngine`` on CPU, ``VLLMEngine`` on GPUs)."""

    def setup(self, tokenizer: Any) -> None:
        """Called once by the DataModule with its tokenizer (for EOS and pad ids) before any generation."""
        ...

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        *,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``sampling.n`` samples for each prompt, as a list (one entry per prompt) of lists of samples.

        With the same weights, prompts, sampling settings and ``seed``, the result is reproducible. A sequence
        of seeds gives each prompt its own seed, so a prompt's samples do not depend on the other prompts of the
        call (the same rollouts however prompts are split over ranks or calls).
        """
        ...

    def update_weights(self, policy: nn.Module) -> None:
        """Make the engine sample from ``policy``'s current weights (called after every rollout batch's updates)."""
        ...

    def sleep(self) -> None:
        """Release what the engine holds on the accelerator while the trainer updates (no-op where shared)."""
        ...

    def wake_up(self) -> None:
        """Undo :meth:`sleep` before the next :meth:`generate`."""
        ...


@dataclass
class RolloutBatch:
    """One rollout batch: B = P * G sequences with their scores.

    Attributes:
        prompt_ids: prompt tokens, left-padded, shape ``(B, Tp)``.
        prompt_mask: True on real prompt tokens, shape ``(B, Tp)``.
        response_ids: response tokens, right-padded, shape ``(B, T)``.
        response_mask: True on real response tokens (EOS included), shape ``(B, T)``.
        group_ids: integer id of each sequence's prompt group, shape ``(B,)``.
        scores: reward of each sequence, shape ``(B,)``.
        truncated: True where the response hit the length cap, shape ``(B,)``.
        rollout_logprobs: the rollout engine's log-probs of the response tokens, shape ``(B, T)``, or ``None``.
        prompts: prompt text of each sequence (length B).
        completions: decoded response of each sequence (length B).
        answers: reference answer of each sequence (length B).
        info: scalar statistics of how the batch was made (timings in seconds, reward failures, ...).
        temperature: the sampling temperature the responses were drawn at (0: greedy); the module scores the
            responses at this temperature (at 1.0 for greedy ones).
        staleness: policy versions (rollout batches' updates) between the weights that sampled the batch and those
            it is trained from: 0 on-policy, up to ``rollout_ahead`` when generated ahead
            (:mod:`rlvr_lightning.data.prefetch`).
        old_logprobs: the trainer's log-probs of the response tokens under the weights that sampled them, shape
            ``(B, T)``, attached by the trainer to a batch generated ahead while it still holds those weights;
            ``None``: the trainer computes them when it trains on the batch (on-policy).
        old_entropy: the trainer's token entropy under those weights, shape ``(B, T)``, with ``old_logprobs``.
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    group_ids: Tensor
    scores: Tensor
    truncated: Tensor
    rollout_logprobs: Tensor | None = None
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    temperature: float = 1.0
    staleness: int = 0
    old_logprobs: Tensor | None = None
    old_entropy: Tensor | None = None

    def __len__(self) -> int:
        return int(self.response_ids.shape[0])

    def _map(self, fn_tensor: Any, fn_list: Any) -> "RolloutBatch":
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = fn_tensor(v)
            elif isinstance(v, list):
                out[f.name] = fn_list(v)
            else:
                out[f.name] = v
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=True), lambda xs: xs)

    def select(self, index: Tensor | Sequence[int] | slice) -> "RolloutBatch":
        """The sequences at ``index`` (a slice, a list of ints, or a 1-D long tensor)."""
        if isinstance(index, slice):
            return self._map(lambda t: t[index], lambda xs: xs[index])
        idx = torch.as_tensor(index, dtype=torch.long)
        ids = idx.tolist()
        return self._map(lambda t: t[idx.to(t.device)], lambda xs: [xs[i] for i in ids] if xs else xs)

    def model_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(input_ids, attention_mask, position_ids)`` of prompt + response, each shape ``(B, Tp + T)``.

        Padding sits left of the prompt and right of the response; positions count real tokens only, so a
        left-padded prompt gets the same positions as an unpadded one.
        """
        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return input_ids, attention_mask, position_ids


def concat_batches(batches: Iterable[RolloutBatch]) -> RolloutBatch:
    """Stack rollout batches along B, re-padding prompts (left) and responses (right) to a common width."""
    batches = list(batches)
    if len(batches) == 1:
        return batches[0]

    def pad(ts: list[Tensor], left: bool, value: Any) -> Tensor:
        width = max(t.shape[1] for t in ts)
        out = []
        for t in ts:
            extra = width - t.shape[1]
            if extra:
                filler = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
                t = torch.cat([filler, t] if left else [t, filler], dim=1)
            out.append(t)
        return torch.cat(out, dim=0)

    first = batches[0]
    pad_id = 0
    rl = [b.rollout_logprobs for b in batches]
    info: dict[str, float] = {}
    for b in batches:
        for k, v in b.info.items():
            info[k] = info.get(k, 0.0) + v
    return RolloutBatch(
        prompt_ids=pad([b.prompt_ids for b in batches], True, pad_id),
        prompt_mask=pad([b.prompt_mask for b in batches], True, False),
        response_ids=pad([b.response_ids for b in batches], False, pad_id),
        response_mask=pad([b.response_mask for b in batches], False, False),
        group_ids=torch.cat([b.group_ids for b in batches]),
        scores=torch.cat([b.scores for b in batches]),
        truncated=torch.cat([b.truncated for b in batches]),
        rollout_logprobs=None if any(r is None for r in rl) else pad(rl, False, 0.0),  # type: ignore[arg-type]
        prompts=sum((b.prompts for b in batches), []),
        completions=sum((b.completions for b in batches), []),
        answers=sum((b.answers for b in batches), []),
        info=info if first.info is not None else {},
        temperature=first.temperature,
    )


class RolloutSource(Protocol):
    """Everything ``RLVRModule`` reads from its DataModule (``trainer.datamodule``), and nothing else.

    ``RolloutDataModule`` implements it. Training batches arrive through Lightning's ``train_dataloader`` (one
    :class:`RolloutBatch` per step, generated on demand from the current weights, or ahead of time and marked by
    its ``staleness``); the DataModule owns its engine, puts it to sleep after each rollout, and gets the policy's
    weights through :meth:`sync_weights`. The module checks the members (:func:`as_rollout_source`) before a run
    starts.
    """

    prompts_per_step: int
    """P: prompts per training step over all ranks."""
    num_generations: int
    """G: responses per prompt."""
    eval_sets: Mapping[str, EvalSet]
    """The evaluation sets by name; the module reads their ``k`` and ``ks`` (the metrics' sizes)."""

    @property
    def steps_per_epoch(self) -> int:
        """Training steps in one data epoch."""
        ...

    @property
    def epoch(self) -> int:
        """The 0-based data epoch of the next training batch."""
        ...

    def sync_weights(self, policy: nn.Module, score: Any = None) -> None:
        """Make the rollout engine sample from ``policy``'s current weights. ``score(model, batch) -> (logp,
        entropy)`` is how the trainer scores a batch: a source that generated one in the background while the
        trainer updated scores it with the weights that sampled it before they change."""
        ...

    def eval_rollout(self, batch: dict[str, Any], batch_idx: int) -> RolloutBatch:
        """Sample and score the responses of one evaluation batch (from ``val_dataloader``), the engine asleep
        afterwards; ``RolloutBatch.temperature`` says how they were sampled."""
        ...

    def prefetched(self) -> list[RolloutBatch]:
        """The training batches generated ahead at the last pull, from the weights the trainer holds until its next
        update (empty when rollouts are on-policy); the trainer attaches their ``old_logprobs`` and
        ``old_entropy`` before it updates."""
        ...


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` (attributes and methods) that ``obj`` lacks, without evaluating properties.

    Unlike ``isinstance`` on a runtime-checkable protocol, a property that raises (say, a step count before the
    prompts are loaded) counts as present.
    """
    names = {n for n in vars(protocol) if not n.startswith("_")} | set(getattr(protocol, "__annotations__", {}))
    missing = []
    for name in sorted(names):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            missing.append(name)
    return missing


def as_rollout_source(dm: Any) -> RolloutSource:
    """``dm`` itself once it has every member of :class:`RolloutSource`.

    Raises:
        TypeError: naming the missing members (or saying there is no DataModule at all).
    """
    missing = missing_members(dm, RolloutSource)
    if missing:
        got = "none" if dm is None else f"{type(dm).__name__}, which lacks {', '.join(missing)}"
        raise TypeError(
            f"RLVRModule needs a DataModule implementing rlvr_lightning.data.types.RolloutSource (e.g. "
            f"RolloutDataModule, passed as datamodule=); got {got}"
        )
    return dm
