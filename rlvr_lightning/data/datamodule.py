"""``RolloutDataModule``: prompts in, scored rollout batches out, one per training step.

Each ``next`` on the training iterator takes the step's P prompts from a seeded order, generates G responses for
each with the engine (on the policy's current weights), scores them with the reward functions and returns a
:class:`~rlvr_lightning.data.types.RolloutBatch`. With ``rollout_ahead = k > 0`` (one-step-off for ``k = 1``)
the batch handed out was generated ``k`` policy versions earlier, and the pull generates the batch ``k`` steps
ahead (:mod:`rlvr_lightning.data.prefetch`), with ``background_rollouts`` in a worker thread while the trainer
updates.

Epochs: the prompt order is a fresh seeded permutation for each data epoch, and one data epoch is
``steps_per_epoch = len(prompts) // prompts_per_step`` steps (the last incomplete step is dropped). The prompts are
distinct: a training record whose prompt repeats an earlier one is dropped at setup unless ``keep_duplicates``.
The training iterator ends at the end of a data epoch, so a Lightning epoch is a data epoch:
``Trainer(max_epochs=...)`` and ``Trainer(max_steps=...)`` both work, and a new ``iter()`` continues with the next
data epoch.

Resume: ``state_dict()`` holds the step (and so the epoch and the position in the order) and the batches
generated ahead; after ``load_state_dict()`` the next batch is the one of the uninterrupted run.

Distributed: with world size W, rank r takes prompts ``[r * P/W, (r+1) * P/W)`` of each step's P prompts (all
ranks share one order); ``group_ids`` count the prompts of the local batch from 0. Validation prompts are split
across ranks by index modulo W (padded so that every rank has the same batches).

Validation: one dataloader per benchmark set (:class:`~rlvr_lightning.data.evaluation.EvalSet`): ``val_files`` /
``val_dataset`` make a set named ``"val"`` read with the training fields and template, ``eval_sets`` add more.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from rlvr_lightning.data.collate import assemble_batch, unpack_prompts
from rlvr_lightning.data.dedup import DuplicateReport, load_unique_records
from rlvr_lightning.data.dynamic_sampling import zero_variance_policy
from rlvr_lightning.data.engines import EngineName, is_auto_vllm, make_engine
from rlvr_lightning.data.hf_engine import HFEngine
from rlvr_lightning.data.evaluation import EvalLoader, EvalSet, eval_loaders, eval_seed, load_eval_set, named_eval_sets
from rlvr_lightning.data.prefetch import RolloutQueue, RolloutStream, Scorer
from rlvr_lightning.data.prompts import PromptFormat, PromptRecord, PromptSource, format_prompts
from rlvr_lightning.data.stream import check_sizes, global_count, report_overlong, warn_on_resume_mismatch
from rlvr_lightning.data.tokenize import DEFAULT_CACHE_DIR
from rlvr_lightning.data.schedule import step_prompt_indices, step_sampling_seed
from rlvr_lightning.data.types import RolloutBatch, RolloutEngine, SamplingConfig
from rlvr_lightning.rewards import MathVerifyReward, score_completions
from rlvr_lightning.rewards.combine import RewardSpec, resolve_rewards
from rlvr_lightning.seeding import resolve_seed

__all__ = ["RolloutDataModule"]

class RolloutDataModule(pl.LightningDataModule):
    """Rollout batches for RLVR training, and validation prompts with their answers.

    Args:
        tokenizer: a tokenizer path or hub name (``AutoTokenizer.from_pretrained``).
        trust_remote_code: passed to ``AutoTokenizer.from_pretrained``.
        train_files: training prompt file(s): ``.jsonl``, ``.json`` (a list of objects) or ``.parquet``.
        train_dataset: a ``datasets`` name or a local dataset directory (instead of ``train_files``; under the CLI
            a ``--data.train_files`` on the command line replaces a ``train_dataset`` of the config).
        train_split: the split of ``train_dataset``.
        keep_duplicates: keep training records whose prompt repeats an earlier one (by default they are dropped,
            and their number reported: ``num_duplicate_prompts``; see :mod:`rlvr_lightning.data.dedup`).
        val_files: validation prompt file(s): an evaluation set named ``"val"`` with the training fields,
            ``num_generations`` samples per question at temperature 1.0 and top-p 1.0.
        val_dataset: a ``datasets`` name or local directory for validation.
        val_split: the split of ``val_dataset``.
        prompt_field: the prompt's field (``a.b`` for nested); the prompt is a string or a list of chat messages.
        answer_field: the reference answer's field (numbers are converted to strings).
        prompt_template: ``str.format`` template of the user text over the record's fields, e.g.
            ``"{prompt}\\nAnswer:"``; None means ``"{prompt}"``.
        chat_template: wrap prompts with the tokenizer's chat template (None: when the tokenizer has one).
        system_prompt: a system message (chat template only).
        prompts_per_step: P, prompts per training step over all ranks (divisible by the world size).
        num_generations: G, responses per prompt.
        temperature: sampling temperature (0: greedy).
        top_p: nucleus mass.
        top_k: top-k (``-1``: off).
        max_new_tokens: response length cap.
        rollout_logprobs: ask the engine for the sampling log-probs (``RolloutBatch.rollout_logprobs``, used by
            the module's truncated importance sampling); None: when the engine's ``logprobs_by_default`` says so
            (vLLM, whose numerics differ from the trainer's), not for ``HFEngine`` (the trainer's own model).
        max_prompt_length: longest prompt in tokens.
        overlong_prompts: ``"drop"`` longer prompts (counted in ``num_dropped_prompts``, with a warning) or
            ``"error"``.
        engine: the rollout engine, or ``"auto"`` (vLLM when it is importable and a GPU is present, else
            ``HFEngine``; None means the same), ``"hf"`` or ``"vllm"`` (:mod:`rlvr_lightning.data.engines`).
            A ``VLLMEngine`` without a model path starts from ``tokenizer``'s path.
        rewards: reward callables or import paths (None: ``[MathVerifyReward()]``); their scores are summed.
        reward_weights: one weight per reward (None: all 1).
        strict_rewards: re-raise a reward function's exception instead of scoring its batch 0.
        zero_variance_groups: what to do with groups whose G responses all got the same reward (no signal):
            ``"keep"`` them; ``"skip_batch"``: replace a batch in which every group (on every rank) has zero
            variance by the next step's prompts; ``"resample"`` (DAPO's dynamic sampling): drop such groups and
            generate the prompts of following steps until the batch has ``prompts_per_step`` groups with signal,
            filling up with zero-variance groups if ``max_extra_rollouts`` is reached; or the import path of a
            :class:`~rlvr_lightning.data.dynamic_sampling.ZeroVariancePolicy` subclass. Extra rollouts advance
            ``step`` (the prompt stream), so resuming stays exact.
        max_extra_rollouts: the most extra rollouts per training step for ``skip_batch`` / ``resample``.
        val_batch_size: questions per validation batch.
        eval_sets: benchmark sets evaluated by ``validate`` and the periodic validation of ``fit``, one
            dataloader each (after ``"val"`` when ``val_files`` is set).
        seed: seeds the prompt order and the sampling (None: the run's ``seed_everything``).
        token_cache: a folder where the token ids of training sets of 10,000 or more distinct prompts are cached
            (:mod:`rlvr_lightning.data.tokenize`); None: no cache.
        seed_per_prompt: give every prompt of a step its own sampling seed, from its position in the step over
            all ranks: rollouts then do not depend on the number of ranks or how prompts are batched (the HF
            engine draws each prompt's tokens from its own generator in one batched call: no slower).
        rollout_ahead: rollout batches generated ahead of training: 0 (on-policy), 1 (one-step-off: each batch
            after the first is sampled from the weights before the previous batch's updates; ``staleness`` 1),
            k (batch j from the weights of k batches' updates earlier).
        background_rollouts: generate the batch ahead (``rollout_ahead >= 1``) in a worker thread while the trainer
            updates: the same batches, in less time; the engine needs weights of its own (``owns_weights``).
    """

    def __init__(
        self,
        tokenizer: str,
        trust_remote_code: bool = False,
        train_files: str | list[str] | None = None,
        train_dataset: str | None = None,
        train_split: str = "train",
        keep_duplicates: bool = False,
        val_files: str | list[str] | None = None,
        val_dataset: str | None = None,
        val_split: str = "test",
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        prompt_template: str | None = None,
        chat_template: bool | None = None,
        system_prompt: str | None = None,
        prompts_per_step: int = 8,
        num_generations: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        max_new_tokens: int = 256,
        rollout_logprobs: bool | None = None,
        max_prompt_length: int = 512,
        overlong_prompts: Literal["drop", "error"] = "drop",
        engine: RolloutEngine | EngineName | None = "auto",
        rewards: list[RewardSpec] | RewardSpec | None = None,
        reward_weights: list[float] | None = None,
        strict_rewards: bool = False,
        zero_variance_groups: Literal["keep", "skip_batch", "resample"] | str = "keep",
        max_extra_rollouts: int = 4,
        val_batch_size: int = 32,
        eval_sets: list[EvalSet] | None = None,
        seed: int | None = None,
        token_cache: str | None = DEFAULT_CACHE_DIR,
        seed_per_prompt: bool = False,
        rollout_ahead: int = 0,
        background_rollouts: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(prompts_per_step=prompts_per_step, num_generations=num_generations,
                     max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length, val_batch_size=val_batch_size)
        self.zero_variance_policy = zero_variance_policy(zero_variance_groups)
        if max_extra_rollouts < 0:
            raise ValueError(f"max_extra_rollouts must be >= 0, got {max_extra_rollouts}")
        self.prompt_format = PromptFormat(prompt_template, chat_template, system_prompt, max_prompt_length,
                                          overlong_prompts)
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.tokenizer_name = tokenizer
        self.trust_remote_code = trust_remote_code
        self.train_source = PromptSource(train_files, train_dataset, train_split, prompt_field, answer_field)
        self.val_source = PromptSource(val_files, val_dataset, val_split, prompt_field, answer_field)
        self.prompts_per_step, self.num_generations = prompts_per_step, num_generations
        self.keep_duplicates, self.token_cache, self.duplicates = keep_duplicates, token_cache, DuplicateReport()
        self.sampling = SamplingConfig(n=num_generations, temperature=temperature, top_p=top_p, top_k=top_k,
                                       max_new_tokens=max_new_tokens, logprobs=False)
        self._engine_spec, self._rollout_logprobs = engine, rollout_logprobs
        self.rollouts = RolloutQueue(rollout_ahead, background_rollouts)
        self._use_engine(*make_engine(engine))
        self.reward_fns, self.reward_weights = resolve_rewards([MathVerifyReward()] if rewards is None else rewards,
                                                               reward_weights)
        self.strict_rewards, self.max_extra_rollouts = strict_rewards, max_extra_rollouts
        self.val_batch_size = val_batch_size
        self.eval_sets = named_eval_sets(self.val_source, num_generations, list(eval_sets or []))
        self.seed, self.seed_per_prompt = resolve_seed(seed), seed_per_prompt
        self.step = 0  # prompt steps rolled out so far (over the whole run), those generated ahead included
        self.num_dropped_prompts = 0
        self._tokenizer: Any = None
        self._train: list[PromptRecord] | None = None
        self._eval: dict[str, list[PromptRecord]] = {}
        self._engine_ready = False

    # -- properties the LightningModule reads ----------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(
                self.tokenizer_name, trust_remote_code=self.trust_remote_code
            )
        return self._tokenizer

    @property
    def world(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` from the attached trainer, else ``(1, 0)``."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    @property
    def train_prompts(self) -> list[PromptRecord]:
        """The formatted training prompts (loaded on first use)."""
        if self._train is None:
            if not self.train_source.given:
                raise ValueError("no training prompts: set train_files or train_dataset")
            self._train = self._load(self.train_source)
        return self._train

    @property
    def val_prompts(self) -> list[PromptRecord]:
        """The formatted prompts of the ``"val"`` set (empty without ``val_files`` / ``val_dataset``)."""
        return self.eval_prompts("val") if "val" in self.eval_sets else []

    def eval_prompts(self, name: str) -> list[PromptRecord]:
        """The formatted questions of the evaluation set ``name`` (loaded on first use)."""
        if name not in self._eval:
            if name not in self.eval_sets:
                raise KeyError(f"no eval set named {name!r}; sets: {sorted(self.eval_sets)}")
            records, dropped = load_eval_set(self.eval_sets[name], self.tokenizer, self.prompt_format)
            self._warn_dropped(dropped, dropped + len(records), f"eval set {name!r}")
            self._eval[name] = records
        return self._eval[name]

    def eval_seed(self, name: str, batch_idx: int) -> int:
        """The engine seed of validation batch ``batch_idx`` of set ``name`` on this rank (the same every time)."""
        return eval_seed(self.seed, name, batch_idx, self.world[1])

    @property
    def steps_per_epoch(self) -> int:
        """Training steps in one pass over the prompts: ``len(prompts) // prompts_per_step``."""
        n = len(self.train_prompts)
        if n < self.prompts_per_step:
            raise ValueError(f"{n} training prompts are fewer than prompts_per_step={self.prompts_per_step}")
        return n // self.prompts_per_step

    @property
    def epoch(self) -> int:
        """The data epoch of the next training batch."""
        return self.rollouts.next_step(self.step) // self.steps_per_epoch

    # -- LightningDataModule --------------------------------------------------------------------------------
    @property
    def num_duplicate_prompts(self) -> int:
        """Training records dropped because their prompt repeats an earlier one (0 with ``keep_duplicates``)."""
        return self.duplicates.dropped

    def setup(self, stage: str | None = None) -> None:
        """Load the prompts the stage needs (and leave an automatically chosen vLLM engine for ``HFEngine`` when the
        trainer runs on the CPU)."""
        trainer = getattr(self, "trainer", None)
        if (trainer is not None and trainer.strategy.root_device.type != "cuda"
                and is_auto_vllm(self._engine_spec, self.engine)):
            self._use_engine(HFEngine(), "the trainer runs on the CPU")
        self.rollouts.check_engine(self.engine)
        if stage in (None, "fit"):
            _ = self.train_prompts
        if stage in (None, "fit", "validate"):
            for name in self.eval_sets:
                self.eval_prompts(name)

    def train_dataloader(self) -> DataLoader:
        """An iterable of ``RolloutBatch`` over the rest of the current data epoch (made lazily, no workers)."""
        return DataLoader(RolloutStream(self), batch_size=None, num_workers=0)

    def val_dataloader(self) -> EvalLoader | list[EvalLoader]:
        """One loader per evaluation set (the loader itself when there is one set; ``[]`` when none).

        Each yields this rank's questions in batches ``{"set", "prompts", "prompt_ids", "answers", "valid"}``.
        """
        loaders = eval_loaders(self.eval_sets, self.eval_prompts, self.val_batch_size, *self.world)
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self) -> EvalLoader | list[EvalLoader]:
        """The evaluation sets again, for ``rlvr test`` (see :meth:`val_dataloader`)."""
        return self.val_dataloader()

    def state_dict(self) -> dict[str, Any]:
        """The position in the prompt stream and the batches generated ahead (saved in Lightning checkpoints)."""
        return {
            "step": self.step,
            "epoch": self.rollouts.next_step(self.step) // max(1, self._steps_or_zero()),
            "seed": self.seed,
            "num_prompts": len(self._train) if self._train is not None else -1,
            "rollouts": self.rollouts.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next batch is the one the saved run would have made."""
        self.step = int(state_dict["step"])
        if "rollouts" in state_dict:
            self.rollouts.load_state_dict(state_dict["rollouts"])
        warn_on_resume_mismatch(state_dict, self.seed, None if self._train is None else len(self._train))

    # -- batches -------------------------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[PromptRecord]:
        """This rank's prompts for training step ``step`` (deterministic in ``seed`` and ``step``)."""
        world, rank = self.world
        if self.prompts_per_step % world:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} is not divisible by the world size {world}")
        _ = self.steps_per_epoch  # refuses fewer training prompts than prompts_per_step
        ids = step_prompt_indices(step, seed=self.seed, num_prompts=len(self.train_prompts),
                                  prompts_per_step=self.prompts_per_step, world_size=world, rank=rank)
        return [self.train_prompts[i] for i in ids]

    def sampling_seed(self, step: int) -> int | list[int]:
        """The engine seed of training step ``step`` on this rank; with ``seed_per_prompt``, one seed per prompt
        derived from the prompt's position in the step over all ranks (so rollouts do not depend on world size)."""
        world, rank = self.world
        return step_sampling_seed(step, seed=self.seed, prompts_per_step=self.prompts_per_step, world_size=world,
                                  rank=rank, per_prompt=self.seed_per_prompt)

    def next_batch(self) -> RolloutBatch:
        """Generate and score the next training batch (advances ``step``, by more than one when extra rollouts
        replace groups or batches without reward variance, see ``zero_variance_groups``)."""
        self._ensure_ready()
        count = partial(global_count, getattr(self, "trainer", None))  # (value, op) agreed over ranks
        return self.zero_variance_policy(self._rollout_next_step(), self._rollout_next_step, count,
                                         need=self.prompts_per_step // self.world[0],
                                         max_extra=self.max_extra_rollouts)

    def _rollout_next_step(self) -> RolloutBatch:
        batch = self.rollout(self.step_prompts(self.step), seed=self.sampling_seed(self.step))
        self.step += 1
        return batch

    def rollout(
        self,
        prompts: list[PromptRecord] | list[dict[str, Any]],
        n: int | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        logprobs: bool | None = None,
    ) -> RolloutBatch:
        """Generate ``n`` responses for each prompt and score them (used by training and evaluation).

        Args:
            prompts: records, or dicts with ``"prompt_ids"`` (token ids), ``"answer"`` and optionally ``"prompt"``
                (text).
            n: responses per prompt (None: ``num_generations``).
            seed: the engine seed.
            temperature, top_p, top_k, max_new_tokens, logprobs: override the configured sampling.

        Returns:
            A batch of B = len(prompts) * n sequences; ``group_ids`` index ``prompts``.
        """
        self._ensure_ready()
        texts, ids, answers = unpack_prompts(prompts)
        sampling = self._sampling(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, logprobs=logprobs)
        t0 = time.perf_counter()
        started = self.rollouts.worker.take(ids, sampling, seed) if self.rollouts.worker else None
        groups = started if started is not None else self.engine.generate(ids, sampling, seed=seed)
        return assemble_batch(groups, ids, texts, answers, tokenizer=self.tokenizer, score=self._score,
                              temperature=sampling.temperature, generate_seconds=time.perf_counter() - t0)

    def _score(self, completions: list[str], answers: list[str], prompts: list[str]) -> tuple[list[float], dict]:
        return score_completions(completions, answers, self.reward_fns, weights=self.reward_weights, prompts=prompts,
                                 strict=self.strict_rewards)

    def _sampling(self, **overrides: Any) -> SamplingConfig:
        """The configured sampling with the overrides that are not None."""
        return SamplingConfig(**{**vars(self.sampling), **{k: v for k, v in overrides.items() if v is not None}})

    # -- internals -----------------------------------------------------------------------------------------
    def _steps_or_zero(self) -> int:
        return len(self._train) // self.prompts_per_step if self._train is not None else 0

    def _use_engine(self, engine: RolloutEngine, reason: str) -> None:
        """Take ``engine``; the sampling log-probs default to what it asks for (``logprobs_by_default``)."""
        self.engine = engine
        if self.rollouts.worker is not None and isinstance(engine, HFEngine) and reason != "given":
            engine.copy_weights = True  # background rollouts: sample from a copy while the trainer updates
        logprobs = self._rollout_logprobs
        logprobs = getattr(engine, "logprobs_by_default", False) if logprobs is None else logprobs
        self.sampling = dataclasses.replace(self.sampling, logprobs=bool(logprobs))
        rank_zero_info(f"rollout engine: {type(engine).__name__} ({reason})")

    def _ensure_ready(self) -> None:
        if not self._engine_ready:
            self.engine.setup(self.tokenizer)
            self._engine_ready = True

    def _load(self, source: PromptSource) -> list[PromptRecord]:
        """The training records: de-duplicated unless ``keep_duplicates``, formatted and tokenized."""
        records, self.duplicates = load_unique_records(source, keep_duplicates=self.keep_duplicates)
        if self.duplicates.dropped:
            rank_zero_info(self.duplicates.message())
        kept, dropped = format_prompts(records, self.tokenizer, self.prompt_format, cache_dir=self.token_cache)
        self._warn_dropped(dropped, len(records))
        return kept

    def _warn_dropped(self, dropped: int, total: int, what: str = "") -> None:
        self.num_dropped_prompts += dropped
        report_overlong(dropped, total, self.prompt_format.max_prompt_length, what)

    # -- what RLVRModule reads (rlvr_lightning.data.types.RolloutSource) ----------------------------------------
    def sync_weights(self, policy: torch.nn.Module, score: Scorer | None = None) -> None:
        """Make the engine sample from ``policy``'s current weights (after every rollout batch's updates, and
        before evaluating); first complete a batch started in the background, scored by ``score`` under the weights
        that sampled it (:meth:`RolloutQueue.before_sync`, :class:`ParamSnapshot`)."""
        self.rollouts.before_sync(self.next_batch, score, policy)
        self.engine.update_weights(policy)

    def start_rollout(self) -> None:
        """Start the engine on the next step's prompts in the background (``background_rollouts``)."""
        _, ids, _ = unpack_prompts(self.step_prompts(self.step))
        self.rollouts.worker.start(self.engine, ids, self.sampling, self.sampling_seed(self.step))

    def teardown(self, stage: str) -> None:
        """Stop the background rollout worker (waiting for what it runs)."""
        self.rollouts.close()

    def prefetched(self) -> list[RolloutBatch]:
        """The batches the last training pull generated ahead (``rollout_ahead > 0``), sampled from the weights the
        trainer holds until its next update: it attaches their ``old_logprobs`` then."""
        return self.rollouts.fresh()

    def eval_rollout(self, batch: dict[str, Any], batch_idx: int) -> RolloutBatch:
        """Sample ``k`` responses per question of ``batch`` (one of :meth:`val_dataloader`'s) with its set's
        settings and score them: ``len(batch["prompts"]) * k`` sequences; the engine is asleep afterwards.
        ``batch_idx`` with the set's name fixes the engine seed: unchanged weights draw the same responses."""
        es = self.eval_sets[batch["set"]]
        prompts = [{"prompt": t, "prompt_ids": ids, "answer": a}
                   for t, ids, a in zip(batch["prompts"], batch["prompt_ids"], batch["answers"])]
        rollout = self.rollout(prompts, n=es.k, seed=self.eval_seed(es.name, batch_idx), temperature=es.temperature,
                               top_p=es.top_p, top_k=es.top_k, max_new_tokens=es.max_new_tokens, logprobs=False)
        self.engine.sleep()  # as in training: vLLM frees the accelerator while the policy scores (no-op for HF)
        return rollout
