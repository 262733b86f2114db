"""Helpers of the training tests: a reward with signal for a random model, a user reweighting, CLI runs, a random
rollout batch and the log-probs of its responses."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback

from rlvr_lightning.components import ClipCov, KLCov, Reweight, ReweightContext
from rlvr_lightning.data import HFEngine
from rlvr_lightning.data.collate import collate_samples
from rlvr_lightning.data.types import RolloutBatch, Sample, SamplingConfig
from rlvr_lightning.scoring import Scoring

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "smoke.yaml")
SMOKE_LORA = str(REPO / "configs" / "smoke_lora.yaml")


def digit_reward(completions: list[str], answers: list[str], **kw: Any) -> list[float]:
    """Fraction of digit characters in each completion: varied scores even from a random policy."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


class CountingReweight(Reweight):
    """A user's reweighting (not registered): scales positive tokens by ``factor`` and counts its calls."""

    calls = 0

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def __call__(self, ctx: ReweightContext) -> torch.Tensor:
        type(self).calls += 1
        w = torch.where(ctx.advantages > 0, self.factor, 1.0)
        return w * ctx.mask


class _RecordSelection:
    """Appends every mini-batch-wide selection to ``{record}.{rank}`` as a JSON line: the optimizer step, the number
    N of tokens of the mini-batch (over all ranks) and the selected tokens' places in (sequence, position) order."""

    record: str | None

    def select(self, ctx: ReweightContext) -> torch.Tensor:
        import json

        sel = super().select(ctx)  # type: ignore[misc]
        if self.record and ctx.selection is None and ctx.logp.shape[0] == 1:  # the whole mini-batch as one row
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            with open(f"{self.record}.{rank}", "a") as fh:
                fh.write(json.dumps([ctx.step, ctx.mask.shape[1], sel[0].nonzero().flatten().tolist()]) + "\n")
        return sel


class RecordingClipCov(_RecordSelection, ClipCov):
    """ClipCov that records its selections (see ``_RecordSelection``)."""

    def __init__(self, clip_ratio: float = 0.0002, lower: float = 1.0, upper: float = 5.0,
                 record: str | None = None) -> None:
        super().__init__(clip_ratio=clip_ratio, lower=lower, upper=upper)
        self.record = record


class RecordingKLCov(_RecordSelection, KLCov):
    """KLCov that records its selections (see ``_RecordSelection``)."""

    def __init__(self, k_ratio: float = 0.0002, coef: float = 1.0, record: str | None = None) -> None:
        super().__init__(k_ratio=k_ratio, coef=coef)
        self.record = record


class ShiftedLogprobEngine(HFEngine):
    """The HF engine reporting every second token's log-prob off by ``shift``: a sampler whose numerics differ
    from the trainer's token by token."""

    def __init__(self, shift: float = 0.5) -> None:
        super().__init__()
        self.shift = shift

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingConfig, *,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        groups = super().generate(prompt_token_ids, sampling, seed=seed)
        for group in groups:
            for sample in group:
                if sample.logprobs is not None:
                    sample.logprobs = [lp + self.shift * (t % 2) for t, lp in enumerate(sample.logprobs)]
        return groups


def fit(tmp_path: Path, *extra: str, name: str = "run", config: str = SMOKE) -> Any:
    """``rlvr fit`` on the smoke config (or ``config``) in this process, logging under ``tmp_path``; returns the
    CLI."""
    from rlvr_lightning.cli import cli_main

    cwd = os.getcwd()
    os.chdir(REPO)  # the smoke config names assets/ relative to the repository
    try:
        return cli_main([
            "fit", "--config", config,
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name,
            "--data.rewards", "toy_training.digit_reward",
            *extra,
        ])
    finally:
        os.chdir(cwd)


def initial_policy(seed: int = 0) -> torch.nn.Module:
    """The smoke policy as initialized before training."""
    from rlvr_lightning.models import load_causal_lm

    return load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, seed=seed)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_batch(seed: int = 0, n: int = 6) -> RolloutBatch:
    """A rollout batch of random tokens of uneven lengths (the tiny model's vocabulary: 99 tokens)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, 99, (4 + i % 2,), generator=g).tolist() for i in range(n)]
    samples = [Sample(token_ids=torch.randint(2, 99, (7 - i % 3,), generator=g).tolist(), logprobs=None,
                      finish_reason="length") for i in range(n)]
    return collate_samples(prompts, samples, list(range(n)), [0.0] * n, pad_token_id=0)


def response_logprobs(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """The log-probs of the batch's real response tokens under ``model`` (eval mode, no gradients), flattened."""
    return Scoring().score(model, batch)[0][batch.response_mask]


UPDATE_STARTED = threading.Event()  # set by UpdateSignal when the trainer's backward starts


class UpdateSignal(Callback):
    """Sets :data:`UPDATE_STARTED` before every backward of the trainer."""

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        UPDATE_STARTED.set()


class OverlapProbeEngine(HFEngine):
    """``HFEngine(copy_weights=True)`` whose calls outside the main thread wait (up to ``timeout`` s) until the
    trainer's backward has started, then generate: ``calls`` records ``(thread name, overlapped)`` per call, so a
    generation that did not run alongside an update shows ``overlapped`` False."""

    calls: list[tuple[str, bool]] = []

    def __init__(self, timeout: float = 60.0) -> None:
        super().__init__(copy_weights=True)
        self.timeout = timeout

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                 seed: int | Sequence[int] | None = None) -> list[list[Sample]]:
        thread = threading.current_thread()
        overlapped = thread is not threading.main_thread() and UPDATE_STARTED.wait(self.timeout)
        UPDATE_STARTED.clear()
        type(self).calls.append((thread.name, overlapped))
        return super().generate(prompt_token_ids, sampling, seed=seed)
