"""The scalars ``RLVRModule`` logs after each training step, computed from the step's tensors.

Rewards, accuracy, lengths, diversity (distinct responses and distinct correct responses per prompt group) and
calibration (ECE of sequence confidence against correctness) of the rollout batch, its entropy and covariance
splits, the loss statistics of its updates, its staleness, the rollout/trainer log-prob mismatch, component
values, timings and throughput. Cross-rank sums go through the ``global_sum`` given (identity on one rank), so
this runs without a Trainer. :func:`publish` hands them to Lightning in one piece.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from rlvr_lightning import functional as F
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.metrics.diversity import distinct_per_group

GlobalSum = Callable[[Tensor], Tensor]
MAX_OVER_RANKS = ("_max", "peak_memory_gib")  # keys reduced by max over ranks; all others by mean


def global_std(x: Tensor, global_sum: GlobalSum) -> Tensor:
    """Unbiased standard deviation of ``x`` (shape ``(B,)``) over all ranks."""
    n = global_sum(torch.tensor(float(x.numel()), device=x.device))
    mean = global_sum(x.sum()) / n
    sq = global_sum(((x - mean) ** 2).sum())
    return (sq / (n - 1)).sqrt() if n > 1 else torch.zeros((), device=x.device)


def _batch_logs(batch: RolloutBatch, correct_threshold: float, global_sum: GlobalSum) -> dict[str, Tensor]:
    """Rewards, accuracy, zero-variance groups, lengths and truncation of a rollout batch."""
    lengths = batch.response_mask.sum(-1).float()
    scores = batch.scores.float()
    return {
        "train/reward_mean": scores.mean(),
        "train/reward_std": global_std(scores, global_sum),
        "train/accuracy": (scores >= correct_threshold).float().mean(),
        "train/zero_variance_groups": F.group_stats(scores, batch.group_ids).equal.float().mean(),
        "train/response_length_mean": lengths.mean(),
        "train/response_length_max": lengths.max(),
        "train/truncated_frac": batch.truncated.float().mean(),
    }


def _diversity_calibration_logs(batch: RolloutBatch, old_logp: Tensor, correct_threshold: float) -> dict[str, Tensor]:
    """Distinct responses and distinct correct responses per prompt group, and the expected calibration error of
    the sequence confidence (geometric-mean token probability under the sampling policy) against correctness.
    Per rank; averaged over ranks by the logger."""
    correct = batch.scores >= correct_threshold  # (B,)
    groups = batch.group_ids.tolist()
    confidence = F.sequence_confidence(old_logp.detach().float(), batch.response_mask)  # (B,)
    return {
        "train/distinct_responses": torch.tensor(distinct_per_group(batch.completions, groups)),
        "train/distinct_correct": torch.tensor(distinct_per_group(batch.completions, groups, correct.tolist())),
        "train/ece": F.expected_calibration_error(confidence, correct.to(confidence.device)),
    }


def step_logs(
    batch: RolloutBatch, old_logp: Tensor, advantages: Tensor, entropy_split: dict[str, Tensor],
    cov: dict[str, Tensor], step_stats: list[dict[str, Tensor]], *, global_sum: GlobalSum,
    correct_threshold: float, lr: float, nonfinite_total: int, component_values: dict[str, float],
    timings: dict[str, float], rollout_step: int, device: torch.device,
) -> dict[str, Tensor]:
    """Every value logged for one training step, by key (``train/...``, ``rollout/...``, ``time/...`` ...).

    Args:
        batch: the rollout batch (its ``response_mask`` is ``(B, T)``).
        old_logp: log-probs under the sampling policy, shape ``(B, T)``.
        advantages: per-token advantages, shape ``(B, T)``.
        entropy_split: mean token entropy over ``"all"`` / ``"pos"`` / ``"neg"`` tokens (0-dim tensors).
        cov: covariance scores ``"cov"`` / ``"cov_pos"`` / ``"cov_neg"`` (0-dim tensors).
        step_stats: the loss statistics of each update of the step (averaged over updates).
        global_sum: sums a tensor over ranks.
        correct_threshold: a score at or above it counts as correct.
        lr: the learning rate.
        nonfinite_total: updates skipped so far for a non-finite loss or gradient.
        component_values: the loss components' values (``lambda`` ...).
        timings: seconds by ``time/...`` key, ``time/step`` included.
        rollout_step: rollout batches trained on so far.
        device: where the policy lives (the peak accelerator memory is logged on CUDA).
    """
    mask = batch.response_mask
    n_generated = global_sum(mask.sum().float())  # response tokens over all ranks
    n_tok = n_generated.clamp(min=1)
    logs = _batch_logs(batch, correct_threshold, global_sum)
    logs.update(_diversity_calibration_logs(batch, old_logp, correct_threshold))
    logs.update({f"train/entropy{s}": entropy_split[k] for s, k in (("", "all"), ("_pos", "pos"), ("_neg", "neg"))})
    logs.update({f"train/{k}": cov[k] for k in ("cov", "cov_pos", "cov_neg")})
    logs["train/pos_token_frac"] = global_sum((mask & (advantages > 0)).sum().float()) / n_tok
    logs["train/lr"] = torch.tensor(lr)
    logs["train/nonfinite_skipped"] = torch.tensor(float(nonfinite_total))
    for key in step_stats[0]:
        logs[f"train/{key}"] = torch.stack([s[key].float() for s in step_stats]).mean()
    logs["train/staleness"] = torch.tensor(float(batch.staleness))  # policy versions since the batch was sampled
    if "approx_kl" in step_stats[0]:  # the first update's drift from the sampling policy: 0 when on-policy
        logs["train/approx_kl_first"] = step_stats[0]["approx_kl"].float()
    if batch.rollout_logprobs is not None:
        diff = (old_logp - batch.rollout_logprobs).masked_fill(~mask, 0)
        logs["train/rollout_logprob_diff"] = global_sum(diff.abs().sum()) / n_tok
        logs["train/rollout_ratio_max"] = torch.exp(diff.clamp(-20, 20)).amax()
    logs.update({f"train/{k}": torch.tensor(float(v)) for k, v in component_values.items()})
    for k, v in batch.info.items():
        if not k.startswith("time/"):
            logs[f"rollout/{k}"] = torch.tensor(float(v))
    logs.update({k: torch.tensor(float(v)) for k, v in timings.items()})
    if device.type == "cuda":
        logs["gpu/peak_memory_gib"] = torch.tensor(torch.cuda.max_memory_allocated(device) / 2**30)
    logs["throughput/tokens_per_s"] = n_generated / max(timings["time/step"], 1e-9)
    # the x-axis for curves: rollout batches trained on so far. Lightning's own `step` column also counts the
    # phantom batch that ends each data epoch (no training row is written for it)
    logs["rollout_step"] = torch.tensor(float(rollout_step))
    return logs


def publish(trainer: Any, logs: dict[str, Tensor | float], prog_bar: Sequence[str] = ()) -> dict[str, Tensor]:
    """Hand one training step's scalars to Lightning as ``self.log(key, value, on_step=True, on_epoch=False,
    sync_dist=True)`` of each would: into ``trainer.callback_metrics`` and ``trainer.logged_metrics``, the
    ``prog_bar`` keys into ``trainer.progress_bar_metrics``, and to the loggers when Lightning's
    ``log_every_n_steps`` says so, with its ``step`` and ``epoch`` columns. The values travel as one stacked
    float64 tensor: two collectives over ranks (the mean; the max for keys ending in ``MAX_OVER_RANKS``) and one
    copy to the host, where ``self.log`` costs a collective and about half a millisecond of Python per key (it
    moves a torchmetrics result object for every call), 20-40 ms a step for the module's 40-odd keys on CPU.

    Returns the reduced values by key (0-dim float64 CPU tensors)."""
    device = trainer.lightning_module.device
    on_device = {k: v for k, v in logs.items() if isinstance(v, Tensor) and v.device.type != "cpu"}
    on_host = [(k, float(v)) for k, v in logs.items() if k not in on_device]  # Python numbers and CPU tensors
    keys = [*on_device, *(k for k, _ in on_host)]
    parts = [torch.stack([v.detach().reshape(()).to(torch.float64) for v in on_device.values()])] if on_device else []
    parts.append(torch.tensor([v for _, v in on_host], dtype=torch.float64).to(device))  # one copy to the device
    values = torch.cat(parts)  # (K,)
    if trainer.world_size > 1:
        is_max = torch.tensor([k.endswith(MAX_OVER_RANKS) for k in keys], device=values.device)
        mean = trainer.strategy.reduce(values.clone(), reduce_op="mean")
        values = torch.where(is_max, trainer.strategy.reduce(values.clone(), reduce_op="max"), mean)
    reduced = dict(zip(keys, values.cpu().unbind()))
    trainer.callback_metrics.update(reduced)
    trainer.logged_metrics.update(reduced)
    trainer.progress_bar_metrics.update({k: reduced[k] for k in prog_bar if k in reduced})
    connector = trainer._logger_connector  # Lightning's ThroughputMonitor writes through it the same way
    if connector.should_update_logs or trainer.fast_dev_run:
        connector.log_metrics(reduced)  # step: Lightning's batches_that_stepped; adds the epoch column
    return reduced
