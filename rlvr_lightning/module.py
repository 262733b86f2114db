"""RLVRModule: the LightningModule that trains a policy with verifiable rewards.

One training step is one rollout batch (see ``docs/architecture.md``)::

    batch        = next(rollouts)                                  # DataModule: generate + score
    old_logp, H  = policy(batch)            (no grad, once)        # the sampling policy's view
    ref_logp     = reference(batch)         (only if a KL term is on)
    A            = advantage(scores, group_ids, mask)
    for epoch in ppo_epochs, for mini-batch in num_mini_batches:  # N = ppo_epochs * num_mini_batches updates
        logp, ent = policy(mini-batch)     (micro-batched, gradients accumulated)
        loss_tok  = clip(logp, old_logp, A) * reweight(ctx) [+ reweight.extra_loss] [* tis] [+ kl] [+ bonus]
        loss      = aggregation(loss_tok, mask, global normalizers)
        backward, clip grad norm, optimizer step, lr step
    components.update(H); engine.update_weights(policy); log

Lightning's ``global_step`` counts optimizer steps, so a run of S rollout batches with N updates each ends at
``max_steps = S * N``. Optimization is manual; normalizers are global over micro-batches and ranks, so gradient
accumulation and data parallelism give the gradient of one big batch.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import torch
from lightning.pytorch import LightningModule
from jsonargparse import lazy_instance
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from rlvr_lightning import functional as F
from rlvr_lightning.components import (
    GRPO,
    PPOClip,
    Advantage,
    Aggregation,
    Clip,
    EntropyBonus,
    KLPenalty,
    Loss,
    NoEntropyBonus,
    NoKL,
    Reweight,
    TokenMean,
    Uniform,
)
from rlvr_lightning.components.loss import COMPONENTS
from rlvr_lightning.data.evaluation import EvalMetrics, EvalSet, format_eval_table
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.metrics import EntropyDynamics, TokenEntropy
from rlvr_lightning.optim import ConstantWithWarmup


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive updates with a NaN or infinite loss or gradient."""


class RLVRModule(LightningModule):
    """A policy, an optional frozen reference, and the pluggable RLVR loss.

    Args:
        model: policy weights: a local directory or a hub name.
        reference_model: reference weights for the KL term (default: ``model``); loaded only if ``kl`` needs it.
        dtype: parameter dtype of the loaded models ("float32", "bfloat16", "float16", "auto").
        attn_implementation: transformers attention backend (e.g. "sdpa", "flash_attention_2"); None: default.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        from_scratch: build the policy from its config with random weights (tests and smoke runs).
        trust_remote_code: allow model code from the model folder or hub (off by default).
        fsdp_param_dtype: under FSDP2 (``ModelParallelStrategy``), the dtype parameters are gathered and computed in
            ("bfloat16" for mixed precision, with fp32 master weights and fp32 gradient reduction); None keeps
            the parameters' own dtype.
        advantage: how scores become per-token advantages.
        clip: the per-token surrogate loss (PPO clip, Clip-Higher, CISPO, GSPO, ...).
        reweight: per-token weights of the surrogate (PAR and the paper's baselines).
        aggregation: how per-token losses become a scalar.
        kl: KL penalty toward the reference (none by default, as in the paper).
        entropy_bonus: entropy regularization (none by default).
        optimizer: optimizer factory; None means AdamW(lr=1e-6, weight_decay=0.01), verl's default.
        lr_scheduler: scheduler factory, stepped once per optimizer step; None means a constant rate.
        ppo_epochs: passes over each rollout batch.
        num_mini_batches: optimizer steps per pass; ``ppo_epochs * num_mini_batches`` is the paper's N.
        micro_batch_size: sequences per forward/backward (gradient accumulation); None: a whole mini-batch.
        max_grad_norm: gradient-norm clipping threshold (None: no clipping, the norm is still logged).
        tis_cap: truncated importance sampling against the rollout engine's log-probs: whenever a batch carries
            them (``data.rollout_logprobs``, on by default with vLLM), each token's loss is weighted by
            ``min(pi_old / pi_rollout, tis_cap)``, correcting the mismatch between the engine's sampling and the
            trainer's numerics; None turns it off.
        shuffle_mini_batches: shuffle sequences (seeded) before splitting each pass into mini-batches.
        correct_threshold: a response whose score reaches this counts as correct in ``train/accuracy``.
        max_consecutive_nonfinite: stop the run after this many updates in a row with a non-finite loss or
            gradient (each one is skipped and counted).
        seed: seed of the random initialization (with ``from_scratch``) and of mini-batch shuffling.
    """

    def __init__(
        self,
        model: str,
        reference_model: str | None = None,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        from_scratch: bool = False,
        trust_remote_code: bool = False,
        fsdp_param_dtype: str | None = None,
        advantage: Advantage = lazy_instance(GRPO),
        clip: Clip = lazy_instance(PPOClip),
        reweight: Reweight = lazy_instance(Uniform),
        aggregation: Aggregation = lazy_instance(TokenMean),
        kl: KLPenalty = lazy_instance(NoKL),
        entropy_bonus: EntropyBonus = lazy_instance(NoEntropyBonus),
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        ppo_epochs: int = 1,
        num_mini_batches: int = 1,
        micro_batch_size: int | None = None,
        max_grad_norm: float | None = 1.0,
        tis_cap: float | None = 2.0,
        shuffle_mini_batches: bool = True,
        correct_threshold: float = 0.5,
        max_consecutive_nonfinite: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (("ppo_epochs", ppo_epochs, 1), ("num_mini_batches", num_mini_batches, 1),
                                 ("max_consecutive_nonfinite", max_consecutive_nonfinite, 1)):
            if value < low:
                raise ValueError(f"model.{name} must be >= {low}, got {value}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"model.micro_batch_size must be >= 1 or null, got {micro_batch_size}")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"model.max_grad_norm must be > 0 or null, got {max_grad_norm}")
        if tis_cap is not None and tis_cap < 1:
            raise ValueError(f"model.tis_cap must be >= 1 or null, got {tis_cap}")
        self.save_hyperparameters(ignore=list(COMPONENTS) + ["optimizer", "lr_scheduler"])
        self.automatic_optimization = False
        self.model_path, self.reference_path = model, reference_model or model
        self.loss = Loss(advantage, clip, reweight, aggregation, kl, entropy_bonus)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.policy: nn.Module | None = None
        # The frozen reference is kept out of the module tree: it is not trained, so it is neither saved in
        # checkpoints (which would double their size) nor wrapped by DDP; configure_model shards it under FSDP2
        # and on_fit_start moves it to the device otherwise.
        self._frozen: list[nn.Module] = []
        self.rollout_step = 0  # rollout batches consumed; saved in checkpoints
        self.entropy_stats = TokenEntropy()  # synced across ranks on compute()
        self.entropy_dynamics = EntropyDynamics()
        self.nonfinite_total = 0
        self._nonfinite_streak = 0
        self.eval_metrics = nn.ModuleDict()  # EvalMetrics per evaluation set, made on its first batch
        self.last_eval: dict[str, dict[str, Any]] = {}  # per set: the last validation's metrics and samples
        self._eval_temperature: float | None = None  # the sampling temperature while scoring a validation batch
        self._data_epoch = 1

    # ------------------------------------------------------------------ start-up checks
    def setup(self, stage: str) -> None:
        """Cross-check model and data settings before ``configure_model`` loads any weights.

        Raises:
            ValueError: a group size below 2 with a group-normalized advantage; ``prompts_per_step`` not divisible by
                the world size; the sequences per rank and step not divisible into ``num_mini_batches`` equal
                mini-batches. (Micro-batches may be uneven: losses use the mini-batch's global token counts.)
        """
        dm = self.trainer.datamodule if self._trainer is not None else None
        P, G = getattr(dm, "prompts_per_step", None), getattr(dm, "num_generations", None)
        if stage != "fit" or not isinstance(P, int) or not isinstance(G, int):
            return
        if self.advantage.needs_groups and G < 2:
            raise ValueError(
                f"data.num_generations must be >= 2 with the group-normalized advantage "
                f"{type(self.advantage).__name__} (a group of 1 has no baseline: every advantage would be 0), "
                f"got {G}; raise data.num_generations or choose an advantage with needs_groups=False"
            )
        world = self.trainer.world_size
        if P % world:
            raise ValueError(f"data.prompts_per_step={P} must be divisible by the world size {world}")
        local = P // world * G
        n_mini = self.hparams.num_mini_batches
        if local % n_mini:
            valid = [d for d in range(1, local + 1) if local % d == 0]
            raise ValueError(
                f"model.num_mini_batches={n_mini} must divide the sequences per step and rank, "
                f"data.prompts_per_step / world_size * data.num_generations = {P} / {world} * {G} = {local}; "
                f"valid values: {valid}"
            )

    # ------------------------------------------------------------------ models
    def configure_model(self) -> None:
        """Load the policy (and the reference if the KL term needs one); shard them under FSDP2."""
        from rlvr_lightning.models import freeze, load_causal_lm

        hp = self.hparams
        kw = dict(dtype=hp.dtype, attn_implementation=hp.attn_implementation,
                  trust_remote_code=hp.trust_remote_code)
        if self.policy is None:
            self.policy = load_causal_lm(self.model_path, gradient_checkpointing=hp.gradient_checkpointing,
                                         from_scratch=hp.from_scratch, seed=hp.seed, **kw)
        if self.loss.needs_reference and self.reference is None:
            if hp.from_scratch and self.reference_path == self.model_path:
                ref = load_causal_lm(self.model_path, from_scratch=True, seed=hp.seed, **kw)
            else:
                ref = load_causal_lm(self.reference_path, **kw)
            self._frozen = [freeze(ref)]
        mesh = self.device_mesh
        if mesh is not None:
            from rlvr_lightning.models import DTYPES
            from rlvr_lightning.parallel import shard_model

            param_dtype = DTYPES[hp.fsdp_param_dtype] if hp.fsdp_param_dtype else None
            shard_model(self.policy, mesh, param_dtype=param_dtype)
            if self.reference is not None:
                shard_model(self.reference, mesh, param_dtype=param_dtype)

    @property
    def reference(self) -> nn.Module | None:
        """The frozen reference model (None unless the KL term needs one)."""
        return self._frozen[0] if self._frozen else None

    def on_fit_start(self) -> None:
        ref = self.reference
        if ref is not None and self.device_mesh is None:
            ref.to(self.device)

    def components(self) -> dict[str, Any]:
        """The six loss components by name."""
        return self.loss.components()

    # the components stay reachable as before (``model.reweight`` in configs and code)
    advantage = property(lambda self: self.loss.advantage, doc="The loss's advantage estimator.")
    clip = property(lambda self: self.loss.clip, doc="The loss's per-token surrogate.")
    reweight = property(lambda self: self.loss.reweight, doc="The loss's per-token reweighting.")
    aggregation = property(lambda self: self.loss.aggregation, doc="The loss's aggregation.")
    kl = property(lambda self: self.loss.kl, doc="The loss's KL penalty.")
    entropy_bonus = property(lambda self: self.loss.entropy_bonus, doc="The loss's entropy bonus.")

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> Any:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01)
        else:
            opt = self.optimizer_factory(params)
        sched = self.scheduler_factory(opt) if self.scheduler_factory is not None else ConstantWithWarmup(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        self._sync_weights()

    def _engine(self) -> Any:
        dm = self.trainer.datamodule if self._trainer is not None else None
        engine = getattr(dm, "engine", None)
        if engine is None:
            raise RuntimeError("RLVRModule needs a DataModule with a rollout `engine` (e.g. RolloutDataModule)")
        return engine

    def _sync_weights(self) -> float:
        t0 = time.perf_counter()
        self._engine().update_weights(self.policy)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ forward
    def sequence_logprobs(
        self, model: nn.Module, batch: RolloutBatch, *, with_entropy: bool, grad: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Log-probs (and entropy) of the response tokens under ``model``, each shape ``(B, T)``.

        Logits are divided by the sampling temperature so the log-probs are those of the sampling distribution.
        """
        input_ids, attention_mask, position_ids = batch.model_inputs()
        T = batch.response_ids.shape[1]
        with torch.set_grad_enabled(grad):
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=False, logits_to_keep=T + 1)
            logits = out.logits[:, -(T + 1):-1]
            temperature = self._sampling_temperature()
            if with_entropy:
                return F.logprobs_and_entropy(logits, batch.response_ids, temperature=temperature)
            return F.logprobs_from_logits(logits, batch.response_ids, temperature=temperature), None

    def _sampling_temperature(self) -> float:
        """The rollout temperature (1.0 for greedy rollouts or without a DataModule)."""
        if self._eval_temperature is not None:
            return self._eval_temperature or 1.0
        dm = self.trainer.datamodule if self._trainer is not None else None
        sampling = getattr(dm, "sampling", None)
        return float(getattr(sampling, "temperature", 1.0) or 1.0)

    def _micro_batches(self, index: Tensor) -> list[Tensor]:
        size = self.hparams.micro_batch_size or len(index)
        return list(index.split(size))

    @torch.no_grad()
    def _score_batch(self, model: nn.Module, batch: RolloutBatch, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
        parts = [self.sequence_logprobs(model, batch.select(idx), with_entropy=with_entropy, grad=False)
                 for idx in self._micro_batches(torch.arange(len(batch)))]
        logp = torch.cat([p[0] for p in parts])
        ent = torch.cat([p[1] for p in parts]) if with_entropy else None
        return logp, ent

    # ------------------------------------------------------------------ the step
    def training_step(self, dataloader_iter: Iterator[tuple[RolloutBatch, int, int]]) -> None:
        t_step = time.perf_counter()
        dm = self.trainer.datamodule
        self._data_epoch = int(getattr(dm, "epoch", 0)) + 1  # 1-based data epoch of the batch pulled next
        batch = next(dataloader_iter)[0].to(self.device)  # Lightning yields (batch, batch_idx, dataloader_idx)
        self._engine().sleep()  # vLLM frees its KV cache and weights while the trainer works (no-op for HF)
        mask = batch.response_mask
        timings = {k: v for k, v in batch.info.items() if k.startswith("time/")}

        t0 = time.perf_counter()
        was_training = self.policy.training
        self.policy.eval()  # no dropout while scoring the sampling policy
        old_logp, entropy = self._score_batch(self.policy, batch, with_entropy=True)
        self.policy.train(was_training)
        ref_logp = self._score_batch(self.reference, batch, False)[0] if self.loss.needs_reference else None
        advantages = self.loss.advantages(batch.scores, batch.group_ids, mask)
        self.entropy_stats.update(entropy, mask, advantages)
        entropy_split = self.entropy_stats.compute()
        self.entropy_stats.reset()
        measured_entropy = float(entropy_split["all"])  # the same on every rank: it drives stateful components
        timings["time/old_logprobs"] = time.perf_counter() - t0

        tis = None
        if self.hparams.tis_cap is not None and batch.rollout_logprobs is not None:
            tis = torch.exp((old_logp - batch.rollout_logprobs).clamp(-20, 20)).clamp(max=self.hparams.tis_cap)

        t0 = time.perf_counter()
        step_stats: list[dict[str, Tensor]] = []
        gen = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.rollout_step)
        for _ in range(self.hparams.ppo_epochs):
            order = (torch.randperm(len(batch), generator=gen) if self.hparams.shuffle_mini_batches
                     else torch.arange(len(batch)))
            for mb in order.chunk(self.hparams.num_mini_batches):
                step_stats.append(self._update(batch, mb, old_logp, advantages, ref_logp, tis, measured_entropy))
        timings["time/update"] = time.perf_counter() - t0

        used = self.loss.log_values()  # the values this step's updates used
        self.loss.update(measured_entropy)
        timings["time/weight_sync"] = self._sync_weights()
        self.rollout_step += 1
        timings["time/step"] = time.perf_counter() - t_step
        self._log_step(batch, old_logp, advantages, entropy_split, step_stats, timings, used)

    def _update(
        self, batch: RolloutBatch, mb: Tensor, old_logp: Tensor, advantages: Tensor,
        ref_logp: Tensor | None, tis: Tensor | None, measured_entropy: float,
    ) -> dict[str, Tensor]:
        """One optimizer step on the mini-batch ``mb`` (indices into ``batch``), accumulated over micro-batches."""
        mask = batch.response_mask
        # normalizers are global over the mini-batch's micro-batches and ranks
        norms = self.loss.normalizers(mask[mb], all_reduce=self._global_sum)
        world = self.trainer.world_size if self._trainer is not None else 1
        context = dict(step=self.global_step, total_steps=self.trainer.max_steps if self._trainer else -1,
                       epoch=self._data_epoch, total_epochs=self._total_epochs(), measured_entropy=measured_entropy)
        sums: dict[str, Tensor] = {}
        for micro, idx in enumerate(self._micro_batches(mb)):
            m = mask[idx]
            logp, ent = self.sequence_logprobs(self.policy, batch.select(idx), with_entropy=True, grad=True)
            loss, stats = self.loss(
                logp, old_logp[idx], advantages[idx], m, ent,
                ref_logp=None if ref_logp is None else ref_logp[idx], tis=None if tis is None else tis[idx],
                sample_key=self.global_rank * 65_537 + micro, world_size=world, **norms, **context,
            )
            self.manual_backward(loss)
            share = m.sum() / norms["num_tokens"]  # this micro-batch's share of the mini-batch's tokens
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * share
            sums["loss"] = sums.get("loss", 0) + loss.detach() / world
        return self._optimizer_step(sums)

    def _optimizer_step(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """Clip the accumulated gradients and step, or skip a non-finite update; the step's logged sums."""
        opt = self.optimizers()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        max_norm = self.hparams.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        # every rank takes the same decision: a non-finite value anywhere skips the update everywhere
        bad = (~torch.isfinite(grad_norm)) | (~torch.isfinite(sums["loss"]))
        finite = bool(self._global_sum(bad.float().reshape(()).to(self.device)) == 0)
        if finite:
            opt.step()
            self.lr_schedulers().step()
            self._nonfinite_streak = 0
        else:
            self.nonfinite_total += 1
            self._nonfinite_streak += 1
            rank_zero_warn(
                f"skipped an update with a non-finite loss or gradient (loss={float(sums['loss'])}, "
                f"grad_norm={float(grad_norm)}); {self._nonfinite_streak} in a row, {self.nonfinite_total} in all"
            )
            if self._nonfinite_streak >= self.hparams.max_consecutive_nonfinite:
                saved = self._save_nonfinite_checkpoint()
                raise NonFiniteLossError(
                    f"{self._nonfinite_streak} consecutive updates had a non-finite loss or gradient "
                    f"(loss={float(sums['loss'])}, grad_norm={float(grad_norm)}); stopping. Lower the learning "
                    f"rate or check the rewards; model.max_consecutive_nonfinite sets the limit. {saved}"
                )
        opt.zero_grad(set_to_none=True)
        sums = {k: self._global_sum(v) for k, v in sums.items()}
        sums["grad_norm"] = grad_norm.detach()
        return sums

    def _total_epochs(self) -> int:
        """Planned data epochs: the earlier end of ``trainer.max_epochs`` and ``max_steps`` (-1 if unknown)."""
        ends = []
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            ends.append(int(self.trainer.max_epochs))
        steps_per_epoch = getattr(self.trainer.datamodule, "steps_per_epoch", 0)
        if self.trainer.max_steps > 0 and steps_per_epoch:
            updates = self.hparams.ppo_epochs * self.hparams.num_mini_batches
            ends.append(max(1, -(-self.trainer.max_steps // (updates * steps_per_epoch))))
        return min(ends) if ends else -1

    def _save_nonfinite_checkpoint(self) -> str:
        """Save ``nonfinite.ckpt`` (weights are still those of the last finite update) and say where."""
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or trainer.log_dir or trainer.default_root_dir
        path = os.path.join(folder, "nonfinite.ckpt")
        try:
            trainer.save_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - the run stops either way; do not hide the non-finite error
            return f"Saving a checkpoint failed: {type(err).__name__}: {err}"
        return f"The last finite state is saved in {path}."

    # ------------------------------------------------------------------ distributed reductions
    def _global_std(self, x: Tensor) -> Tensor:
        """Unbiased standard deviation of ``x`` (shape ``(B,)``) over all ranks."""
        n = self._global_sum(torch.tensor(float(x.numel()), device=x.device))
        mean = self._global_sum(x.sum()) / n
        sq = self._global_sum(((x - mean) ** 2).sum())
        return (sq / (n - 1)).sqrt() if n > 1 else torch.zeros((), device=x.device)

    def _global_sum(self, x: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.trainer.strategy.reduce(x.clone(), reduce_op="sum")

    # ------------------------------------------------------------------ logging
    def _log_step(
        self, batch: RolloutBatch, old_logp: Tensor, advantages: Tensor, entropy_split: dict[str, Tensor],
        step_stats: list[dict[str, Tensor]], timings: dict[str, float], component_values: dict[str, float],
    ) -> None:
        mask = batch.response_mask
        n_generated = self._global_sum(mask.sum().float())  # response tokens over all ranks
        n_tok = n_generated.clamp(min=1)
        self.entropy_dynamics.update(old_logp, advantages, mask)
        cov = self.entropy_dynamics.compute()
        self.entropy_dynamics.reset()
        lengths = mask.sum(-1).float()
        scores = batch.scores.float()
        _, inverse = torch.unique(batch.group_ids, return_inverse=True)
        n_groups = int(inverse.max()) + 1
        count = torch.zeros(n_groups, device=scores.device).index_add_(0, inverse, torch.ones_like(scores))
        g_mean = torch.zeros(n_groups, device=scores.device).index_add_(0, inverse, scores) / count
        g_sq_dev = torch.zeros(n_groups, device=scores.device).index_add_(0, inverse, (scores - g_mean[inverse]) ** 2)
        logs: dict[str, Any] = {
            "train/reward_mean": scores.mean(),
            "train/reward_std": self._global_std(scores),
            "train/accuracy": (scores >= self.hparams.correct_threshold).float().mean(),
            "train/zero_variance_groups": (g_sq_dev == 0).float().mean(),
            "train/response_length_mean": lengths.mean(),
            "train/response_length_max": lengths.max(),
            "train/truncated_frac": batch.truncated.float().mean(),
            "train/entropy": entropy_split["all"],
            "train/entropy_pos": entropy_split["pos"],
            "train/entropy_neg": entropy_split["neg"],
            "train/cov": cov["cov"],
            "train/cov_pos": cov["cov_pos"],
            "train/cov_neg": cov["cov_neg"],
            "train/pos_token_frac": self._global_sum((mask & (advantages > 0)).sum().float()) / n_tok,
            "train/lr": torch.tensor(self.optimizers().param_groups[0]["lr"]),
            "train/nonfinite_skipped": torch.tensor(float(self.nonfinite_total)),
        }
        for key in step_stats[0]:
            logs[f"train/{key}"] = torch.stack([s[key].float() for s in step_stats]).mean()
        if batch.rollout_logprobs is not None:
            diff = (old_logp - batch.rollout_logprobs).masked_fill(~mask, 0)
            logs["train/rollout_logprob_diff"] = self._global_sum(diff.abs().sum()) / n_tok
            logs["train/rollout_ratio_max"] = torch.exp(diff.clamp(-20, 20)).amax()
        logs.update({f"train/{k}": torch.tensor(float(v)) for k, v in component_values.items()})
        for k, v in batch.info.items():
            if not k.startswith("time/"):
                logs[f"rollout/{k}"] = torch.tensor(float(v))
        logs.update({k: torch.tensor(float(v)) for k, v in timings.items()})
        if self.device.type == "cuda":
            logs["gpu/peak_memory_gib"] = torch.tensor(torch.cuda.max_memory_allocated(self.device) / 2**30)
        logs["throughput/tokens_per_s"] = n_generated / max(timings["time/step"], 1e-9)
        # the x-axis for curves: rollout batches trained on so far. Lightning's own `step` column also counts the
        # phantom batch that ends each data epoch (it re-logs the previous row there, with the same rollout_step)
        logs["rollout_step"] = torch.tensor(float(self.rollout_step))
        # per-rank values (rewards, lengths) are averaged over ranks, which hold equally many sequences
        sync = self.trainer.world_size > 1
        for k, v in logs.items():
            self.log(k, v.float() if isinstance(v, Tensor) else v, on_step=True, on_epoch=False,
                     prog_bar=k in ("train/reward_mean", "train/entropy"), batch_size=len(batch), sync_dist=sync,
                     reduce_fx="max" if k.endswith(("_max", "peak_memory_gib")) else "mean")

    # ------------------------------------------------------------------ evaluation
    def on_validation_start(self) -> None:
        self._sync_weights()  # `validate` never trained; during `fit` it is cheap next to sampling k per question

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Sample k responses per question of an evaluation set's batch, score them, update the set's metrics."""
        dm = self.trainer.datamodule
        es: EvalSet = dm.eval_sets[batch["set"]]
        prompts = [{"prompt": t, "prompt_ids": ids, "answer": a}
                   for t, ids, a in zip(batch["prompts"], batch["prompt_ids"], batch["answers"])]
        rollout = dm.rollout(prompts, n=es.k, seed=dm.eval_seed(es.name, batch_idx), temperature=es.temperature,
                             top_p=es.top_p, top_k=es.top_k, max_new_tokens=es.max_new_tokens, logprobs=False)
        rollout = rollout.to(self.device)
        self._engine().sleep()  # as in training: vLLM frees the accelerator while the policy scores (no-op for HF)
        self._eval_temperature = es.temperature
        try:
            logp, entropy = self._score_batch(self.policy, rollout, with_entropy=True)
        finally:
            self._eval_temperature = None
        if es.name not in self.eval_metrics:
            self.eval_metrics[es.name] = EvalMetrics(
                es.k, es.ks, correct_threshold=self.hparams.correct_threshold).to(self.device)
        self.eval_metrics[es.name].update(rollout, logp, entropy, torch.tensor(batch["valid"], dtype=torch.bool))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/<set>/<metric>`` (``test/...`` under ``rlvr test``) for every set (synced over ranks), print a
        table of the sets, reset."""
        prefix = "test" if self.trainer.testing else "val"
        results: dict[str, dict[str, float]] = {}
        for name, metrics in self.eval_metrics.items():
            if metrics.accuracy.update_count == 0:
                continue
            values = metrics.compute()
            self.log_dict({f"{prefix}/{name}/{key}": v.float() for key, v in values.items()},
                          add_dataloader_idx=False)
            self.log("rollout_step", float(self.rollout_step), add_dataloader_idx=False)
            results[name] = {key: float(v) for key, v in values.items()}
            self.last_eval[name] = {"metrics": results[name], "samples": metrics.samples}
            metrics.reset()
        if results and not self.trainer.sanity_checking:
            ks = {name: self.eval_metrics[name].k for name in results}
            questions = {name: int(values["questions"]) for name, values in results.items()}
            when = f" at step {self.global_step}" if self.trainer.state.fn == "fit" else ""
            title = "test" if prefix == "test" else "validation"
            self.print(f"\n{title}{when}\n" + format_eval_table(results, ks, questions))

    # `rlvr test` evaluates the same benchmark sets as `rlvr validate`, logged under test/
    on_test_start = on_validation_start
    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rlvr"] = {
            "rollout_step": self.rollout_step,
            "nonfinite_total": self.nonfinite_total,
            "components": self.loss.component_state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rlvr", {})
        self.rollout_step = int(state.get("rollout_step", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.loss.load_component_state_dict(state.get("components", {}))


__all__ = ["RLVRModule", "NonFiniteLossError"]
