"""RLVRModule: the LightningModule that trains a policy with verifiable rewards.

One training step is one rollout batch (see ``docs/architecture.md``)::

    batch = next(rollouts)                     # the DataModule (a RolloutSource): generate + score
    A = loss.advantages(...); old_logp, H = policy_that_sampled(batch) [or the single update's own forward]
    ref_logp = reference(batch) [KL only]
    for each of the N = ppo_epochs * num_mini_batches mini-batches:
        for each micro-batch: backward(loss(policy(micro-batch), old_logp, A, ...))   # the Loss object
        clip grad norm, optimizer step (skipped if non-finite), lr step
    loss.update(H); datamodule.sync_weights(policy); log

Lightning's ``global_step`` counts optimizer steps, so a run of S rollout batches with N updates each ends at
``max_steps = S * N``. Optimization is manual; normalizers are global over micro-batches and ranks, so gradient
accumulation and data parallelism give the gradient of one big batch.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch
from jsonargparse import lazy_instance
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rlvr_lightning.batching import check_rollout_split, check_update_settings, mini_batches, total_epochs
from rlvr_lightning.components import (GRPO, Advantage, Aggregation, Clip, EntropyBonus, KLPenalty, Loss,
                                       NoEntropyBonus, NoKL, PPOClip, Reweight, TokenMean, Uniform)
from rlvr_lightning.components.loss import COMPONENTS
from rlvr_lightning.data.evaluation import EvalSet
from rlvr_lightning.data.types import RolloutBatch, RolloutSource, as_rollout_source
from rlvr_lightning.entropy_probe import probed_updates
from rlvr_lightning.lora import LoRAConfig, adapters_only, check_adapters_only, lora_hparams, param_counts
from rlvr_lightning.metrics import EntropyDynamics, EvalMetrics, TokenEntropy, format_eval_table
from rlvr_lightning.models import build_policy, build_reference
from rlvr_lightning.nonfinite import NonFiniteCounter, NonFiniteLossError, save_nonfinite_checkpoint
from rlvr_lightning.optim import ConstantWithWarmup
from rlvr_lightning.parallel import shard_models
from rlvr_lightning.scoring import Scoring, old_logprobs
from rlvr_lightning.seeding import resolve_seed, seeded_rng
from rlvr_lightning.step_log import publish, step_logs
from rlvr_lightning.token_selection import mini_batch_selection
from rlvr_lightning.update import OldScores, accumulate_gradients, entropy_split, has_dropout


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
        lora: train LoRA adapters on a frozen base (:class:`rlvr_lightning.lora.LoRAConfig`, ``docs/lora.md``);
            checkpoints hold the adapters only; the KL reference is the base, adapters off. None: full fine-tuning.
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
        micro_batch_tokens: padded tokens per forward/backward, sequences sorted by length; None: by size alone.
        logits_path: "hidden": log-probs and entropy from the final hidden states, never the (tokens, V) logits
            (which "full" builds; models it does not apply to fall back to them).
        check_logprobs: on every forward, raise unless log-probs <= 0 and entropies lie in [0, log V] (syncs).
        share_prompt_prefix: in every forward, run each distinct prompt (but its last token) once for the rows that
            share it (a group's responses) and reuse its KV cache: (G - 1) / G of the prompt tokens' compute saved;
            log-probs then depend, at float rounding, on which rows share a forward (so on the micro-batch size;
            a Clip-Cov / KL-Cov token at the selection boundary may change with it).
        fuse_old_logprobs: with one update per rollout batch, no dropout, no token selection (Clip-Cov, KL-Cov) and
            an on-policy batch, take the old log-probs and entropy from the update's own forward (one forward
            fewer; the reweighting context's ``measured_entropy`` is then None).
        max_grad_norm: gradient-norm clipping threshold (None: no clipping, the norm is still logged).
        tis_cap: truncated importance sampling: when a batch carries the engine's log-probs
            (``data.rollout_logprobs``, on by default with vLLM), each token's loss is weighted by
            ``min(pi_old / pi_rollout, tis_cap)`` (see ``Loss.tis_weights``); None turns it off.
        shuffle_mini_batches: shuffle sequences (seeded) before splitting each pass into mini-batches.
        correct_threshold: a response whose score reaches this counts as correct in ``train/accuracy``.
        max_consecutive_nonfinite: stop the run after this many updates in a row with a non-finite loss or
            gradient (each one is skipped and counted).
        seed: seed of the random initialization (with ``from_scratch``) and of mini-batch shuffling (None: the
            run's ``seed_everything``).
        entropy_probe_every: every this many rollout steps, log ``train/entropy_change_*`` and
            ``train/entropy_drive_*`` (:func:`rlvr_lightning.entropy_probe.entropy_probe`); 0 (default) never.
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
        lora: LoRAConfig | None = None,
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
        micro_batch_size: int | None = None, micro_batch_tokens: int | None = None,
        logits_path: str = "hidden", check_logprobs: bool = False, fuse_old_logprobs: bool = True,
        share_prompt_prefix: bool = False,
        max_grad_norm: float | None = 1.0,
        tis_cap: float | None = 2.0,
        shuffle_mini_batches: bool = True,
        correct_threshold: float = 0.5,
        max_consecutive_nonfinite: int = 3,
        seed: int | None = None,
        entropy_probe_every: int = 0,
    ) -> None:
        super().__init__()
        check_update_settings(ppo_epochs, num_mini_batches, micro_batch_size, max_grad_norm, tis_cap,
                              max_consecutive_nonfinite, entropy_probe_every, micro_batch_tokens)
        self.save_hyperparameters(ignore=list(COMPONENTS) + ["optimizer", "lr_scheduler", "lora"])
        self.hparams.lora = lora_hparams(lora)  # a plain dict: checkpoints stay loadable with weights_only
        self.automatic_optimization, self.strict_loading = False, lora is None  # LoRA: adapters-only checkpoints
        self.model_path, self.reference_path = model, reference_model or model
        self.seed = resolve_seed(seed)
        self.loss = Loss(advantage, clip, reweight, aggregation, kl, entropy_bonus)
        self.scoring = Scoring(logits_path, check_logprobs, micro_batch_size, micro_batch_tokens, self._max_over_ranks,
                               share_prompt_prefix)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.policy: nn.Module | None = None
        # the frozen reference stays out of the module tree: neither saved (twice the size) nor wrapped by DDP
        self._frozen: list[nn.Module] = []
        self.rollout_step = 0  # rollout batches consumed; saved in checkpoints
        self.entropy_stats, self.entropy_dynamics = TokenEntropy(), EntropyDynamics()  # synced on compute()
        self.nonfinite = NonFiniteCounter(max_consecutive_nonfinite)
        self.eval_metrics = nn.ModuleDict()  # EvalMetrics per evaluation set, made on its first batch
        self.last_eval: dict[str, dict[str, Any]] = {}  # per set: the last validation's metrics and samples
        self._data_epoch = 1

    def setup(self, stage: str) -> None:
        """Before weights load: TypeError if the DataModule is no RolloutSource, ValueError if batches cannot split."""
        dm = self._data()
        if stage == "fit":
            check_rollout_split(dm.prompts_per_step, dm.num_generations, self.trainer.world_size,
                                self.hparams.num_mini_batches, self.advantage)

    # ------------------------------------------------------------------ models
    def configure_model(self) -> None:
        """Load the policy (with adapters if ``lora``) and the reference if the KL term needs one; shard under FSDP2."""
        hp = self.hparams
        kw = dict(dtype=hp.dtype, attn_implementation=hp.attn_implementation, trust_remote_code=hp.trust_remote_code,
                  from_scratch=hp.from_scratch, seed=self.seed, gradient_checkpointing=hp.gradient_checkpointing)
        if self.policy is None:
            self.policy = build_policy(self.model_path, lora=hp.lora, **kw)
        if self.loss.needs_reference and self.reference is None:
            self._frozen = [build_reference(self.policy, self.reference_path, policy_path=self.model_path, **kw)]
        if self.device_mesh is not None:
            shard_models([self.policy, self.reference], self.device_mesh, hp.fsdp_param_dtype)

    @property
    def reference(self) -> nn.Module | None:
        """The frozen reference model (None unless the KL term needs one)."""
        return self._frozen[0] if self._frozen else None

    def on_fit_start(self) -> None:
        if self.reference is not None and self.device_mesh is None:
            self.reference.to(self.device)

    @property
    def nonfinite_total(self) -> int:
        """Updates skipped so far for a non-finite loss or gradient (saved in checkpoints)."""
        return self.nonfinite.total

    def components(self) -> dict[str, Any]:
        """The six loss components by name."""
        return self.loss.components()

    # the components stay reachable as before: model.advantage, model.clip, model.reweight, ... (read-only)
    for _name in COMPONENTS:
        locals()[_name] = property(lambda self, name=_name: getattr(self.loss, name), doc=f"The loss's {_name}.")
    del _name

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> Any:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        factory = self.optimizer_factory or (lambda ps: torch.optim.AdamW(ps, lr=1e-6, weight_decay=0.01))
        opt = factory(params)
        sched = self.scheduler_factory(opt) if self.scheduler_factory is not None else ConstantWithWarmup(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_start(self) -> None:
        self._sync_weights()

    def _data(self) -> RolloutSource:
        """The trainer's DataModule: all the module reads from the data side goes through this contract."""
        return as_rollout_source(self.trainer.datamodule if self._trainer is not None else None)

    def _sync_weights(self) -> float:
        """Give the rollout engine the policy's current weights; the seconds it took."""
        t0 = time.perf_counter()
        self._data().sync_weights(self.policy, score=self.scoring.score)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ the step
    def training_step(self, dataloader_iter: Iterator[tuple[RolloutBatch, int, int]]) -> None:
        t_step = time.perf_counter()
        self._data_epoch = int(self._data().epoch) + 1  # 1-based data epoch of the batch pulled next
        # Lightning yields (batch, batch_idx, dataloader_idx); the DataModule has put its engine to sleep
        batch = next(dataloader_iter)[0].to(self.device)
        mask = batch.response_mask
        timings = {k: v for k, v in batch.info.items() if k.startswith("time/")}

        t0 = time.perf_counter()
        advantages = self.loss.advantages(batch.scores, batch.group_ids, mask)
        # old log-probs: carried by the batch, scored now (eval mode), or taken from the single update's own forward
        scores = old_logprobs(self.scoring, self.policy, batch, self._data().prefetched(), defer=self._fusable())
        old = OldScores.from_forward(mask) if scores is None else OldScores(*scores)
        ref_logp = self.scoring.score(self.reference, batch)[0] if self.loss.needs_reference else None
        split = None if scores is None else entropy_split(self.entropy_stats, old.entropy, mask, advantages)
        timings["time/old_logprobs"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        hp = self.hparams
        order = mini_batches(len(batch), ppo_epochs=hp.ppo_epochs, num_mini_batches=hp.num_mini_batches,
                             shuffle=hp.shuffle_mini_batches, seed=self.seed * 1_000_003 + self.rollout_step)
        measured = None if split is None else float(split["all"])  # the same on every rank
        updates = lambda: [self._update(batch, mb, old, advantages, ref_logp, measured, i == 0)  # noqa: E731
                           for i, mb in enumerate(order)]
        with seeded_rng(self.seed * 1_000_033 + self.rollout_step, self.device):  # dropout: exact on resume
            step_stats, probe_logs = probed_updates(self.policy, batch, advantages, updates,
                                                    every=hp.entropy_probe_every, step=self.rollout_step)
        timings["time/update"] = time.perf_counter() - t0

        split = split if split is not None else entropy_split(self.entropy_stats, old.entropy, mask, advantages)
        used = self.loss.log_values()  # the values this step's updates used
        self.loss.update(float(split["all"]))  # it drives stateful components (PAR's lambda, adaptive entropy)
        timings["time/weight_sync"] = self._sync_weights()
        self.rollout_step += 1
        timings["time/step"] = time.perf_counter() - t_step
        self._log_step(batch, old.logp, advantages, split, step_stats, timings, used, probe_logs)

    def _fusable(self) -> bool:
        """Whether the old log-probs of an on-policy batch may come from the update's own forward: one update per
        rollout batch, no dropout (the forward is then the sampling policy's), no token selection before it."""
        hp = self.hparams
        return (hp.fuse_old_logprobs and hp.ppo_epochs * hp.num_mini_batches == 1
                and not self.loss.reweight.selects_tokens and not has_dropout(self.policy))

    def _update(
        self, batch: RolloutBatch, mb: Tensor, old: OldScores, advantages: Tensor, ref_logp: Tensor | None,
        measured_entropy: float | None, fresh: bool = False,
    ) -> dict[str, Tensor]:
        """One optimizer step on mini-batch ``mb`` (indices into ``batch``); ``fresh``: no update since ``old``."""
        norms = self.loss.normalizers(batch.response_mask[mb], all_reduce=self._global_sum)  # global: micro, ranks
        trainer, hp, world = self.trainer, self.hparams, self.trainer.world_size
        epochs = total_epochs(trainer.max_epochs, trainer.max_steps, self._data().steps_per_epoch,
                              hp.ppo_epochs * hp.num_mini_batches)
        context = dict(step=self.global_step, total_steps=trainer.max_steps, epoch=self._data_epoch,
                       total_epochs=epochs, measured_entropy=measured_entropy)
        selection = mini_batch_selection(  # Clip-Cov, KL-Cov: over the whole mini-batch and all ranks
            self.loss.reweight, self.policy, batch, mb, old.logp, advantages, fresh=fresh, rank=self.global_rank,
            context=context, scoring=self.scoring, all_gather=self.all_gather if world > 1 else None)
        sums = accumulate_gradients(
            self.policy, self.loss, self.scoring, batch, mb, old, advantages, ref_logp=ref_logp, tis_cap=hp.tis_cap,
            norms=norms, context=context, backward=self.manual_backward, world_size=world, rank=self.global_rank,
            selection=selection)
        return self._optimizer_step(sums)

    def _optimizer_step(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """Clip the accumulated gradients and step, or skip a non-finite update; the step's logged sums."""
        opt = self.optimizers()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        max_norm = self.hparams.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
        # every rank takes the same decision: a non-finite value anywhere skips the update everywhere
        bad = (~torch.isfinite(grad_norm)) | (~torch.isfinite(sums["loss"]))
        finite = bool(self._global_sum(bad.float().reshape(()).to(self.device)) == 0)
        if finite:
            opt.step()
            self.lr_schedulers().step()
        self.nonfinite.record(finite, sums["loss"], grad_norm, lambda: save_nonfinite_checkpoint(self.trainer))
        opt.zero_grad(set_to_none=True)
        sums = {k: self._global_sum(v) for k, v in sums.items()}
        sums["grad_norm"] = grad_norm.detach()
        return sums

    # ------------------------------------------------------------------ distributed reductions and logging
    def _global_sum(self, x: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.trainer.strategy.reduce(x.clone(), reduce_op="sum")

    def _max_over_ranks(self, n: int) -> int:
        if self._trainer is None or self.trainer.world_size == 1:
            return n
        return int(self.all_gather(torch.tensor(n, device=self.device)).max())

    def _log_step(
        self, batch: RolloutBatch, old_logp: Tensor, advantages: Tensor, entropy_split: dict[str, Tensor],
        step_stats: list[dict[str, Tensor]], timings: dict[str, float], component_values: dict[str, float],
        extra: dict[str, Tensor],
    ) -> None:
        self.entropy_dynamics.update(old_logp, advantages, batch.response_mask)
        cov = self.entropy_dynamics.compute()
        self.entropy_dynamics.reset()
        logs = step_logs(
            batch, old_logp, advantages, entropy_split, cov, step_stats, global_sum=self._global_sum,
            correct_threshold=self.hparams.correct_threshold, lr=self.optimizers().param_groups[0]["lr"],
            nonfinite_total=self.nonfinite.total, component_values=component_values, timings=timings,
            rollout_step=self.rollout_step, device=self.device,
        )
        logs.update({**extra, **param_counts(self.policy)})  # model/trainable_params, model/total_params
        # per-rank values (rewards, lengths) are averaged over ranks, which hold equally many sequences
        publish(self.trainer, logs, prog_bar=("train/reward_mean", "train/entropy"))

    # ------------------------------------------------------------------ evaluation
    def on_validation_start(self) -> None:
        self._sync_weights()  # `validate` never trained; during `fit` it is cheap next to sampling k per question

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Sample k responses per question of an evaluation set's batch, score them, update the set's metrics."""
        dm = self._data()
        es: EvalSet = dm.eval_sets[batch["set"]]
        rollout = dm.eval_rollout(batch, batch_idx).to(self.device)  # sampled at the set's temperature
        logp, entropy = self.scoring.score(self.policy, rollout)
        if es.name not in self.eval_metrics:
            self.eval_metrics[es.name] = EvalMetrics.for_set(
                es, correct_threshold=self.hparams.correct_threshold).to(self.device)
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
            when = f" at step {self.global_step}" if self.trainer.state.fn == "fit" else ""
            table = format_eval_table(results, {n: self.eval_metrics[n].k for n in results},
                                      {n: int(v["questions"]) for n, v in results.items()})
            self.print(f"\n{'test' if prefix == 'test' else 'validation'}{when}\n{table}")

    # `rlvr test` evaluates the same benchmark sets as `rlvr validate`, logged under test/
    on_test_start = on_validation_start
    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The policy's weights; under LoRA the adapters only (checkpoints leave out the base: it is model.model)."""
        return adapters_only(self, super().state_dict(*args, **kwargs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rlvr"] = {"rollout_step": self.rollout_step, "nonfinite_total": self.nonfinite.total,
                              "components": self.loss.component_state_dict(), "seed": self.seed}  # seed: rlvr export

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_adapters_only(self, checkpoint)
        state = checkpoint.get("rlvr", {})
        self.rollout_step = int(state.get("rollout_step", 0))
        self.nonfinite.total = int(state.get("nonfinite_total", 0))
        self.loss.load_component_state_dict(state.get("components", {}))


__all__ = ["RLVRModule", "NonFiniteLossError"]
