"""``HFEngine``: the rollout engine built on transformers ``generate`` (the CPU default).

By default it samples from the trainer's own policy module (no copy of the weights): :meth:`HFEngine.update_weights`
keeps a reference. With ``copy_weights`` it samples from a copy of the policy (on ``device``), refreshed in place by
every :meth:`HFEngine.update_weights`: it can then generate while the trainer updates the policy
(``data.background_rollouts``).
:meth:`HFEngine.generate` runs the model in eval mode under ``torch.no_grad()``, restoring the previous train/eval
mode afterwards.

Sampling draws from explicit ``torch.Generator`` objects, never from the global RNG (left untouched when seeded):
one generator for a call with one seed, one per prompt with a seed per prompt. All prompts of a call are decoded
in one batched ``generate`` (``batch_size`` caps the sequences per call, in whole prompt groups); a logits
processor (:class:`SeededSampler`) draws each prompt's tokens from its own generator, so a prompt's samples do not
depend on the other prompts of the batch (up to the float rounding of a padded batch, see :meth:`HFEngine.generate`).

Token log-probs (``sampling.logprobs``) are those of the sampling distribution before top-p/top-k truncation:
``log_softmax(logits / temperature)`` of the chosen token (temperature 1 when greedy).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor, nn

from rlvr_lightning.data.collate import pad_rows
from rlvr_lightning.data.types import Sample, SamplingConfig
from rlvr_lightning.models import cache_argument, fsdp_sharded

__all__ = ["HFEngine", "SeededSampler"]

RowGroup = tuple[int, int, "torch.Generator | None"]
"""Rows ``[start, stop)`` of a ``generate`` batch and the generator their tokens are drawn from (None: global)."""


def _find_generator(policy: nn.Module) -> nn.Module:
    """The module with ``generate``: ``policy`` or its ``module`` (DDP), ``model`` or ``policy`` attribute."""
    for cand in (policy, *(getattr(policy, a, None) for a in ("module", "model", "policy"))):
        if isinstance(cand, nn.Module) and callable(getattr(cand, "generate", None)):
            return cand
    raise TypeError(
        f"{type(policy).__name__} has no `generate` method (nor a `.model` / `.policy` that has one); "
        "HFEngine needs a transformers causal LM"
    )


class SeededSampler:
    """A ``generate`` logits processor that draws each row's next token with random numbers fixed in advance.

    Before decoding, every row gets ``max_new_tokens`` uniform numbers from its prompt's own ``torch.Generator``
    (:meth:`draw`); at step ``t`` the processor applies temperature, top-k and top-p (transformers' own warpers, in
    ``generate``'s order) and picks, by inverse CDF, the token where the row's ``t``-th number falls in the
    cumulative distribution (float64). It returns scores that are 0 at that token and ``-inf`` elsewhere, so that
    ``generate`` run with ``do_sample=False`` keeps exactly it. A row's draws so depend on its generator and its
    own distribution only, never on the other rows or on how many steps the batch runs.

    Args:
        sampling: temperature (> 0), top-p and top-k of the draw.
        uniforms: the rows' random numbers in ``[0, 1)``, shape ``(b, max_new_tokens)``.
        prompt_width: the (padded) prompt length of the batch: step ``t`` sees ``prompt_width + t`` input ids.
    """

    def __init__(self, sampling: SamplingConfig, uniforms: Tensor, prompt_width: int) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if sampling.temperature <= 0:
            raise ValueError(f"SeededSampler samples at a temperature > 0, got {sampling.temperature}")
        self.warpers: list[Any] = []
        if sampling.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(float(sampling.temperature)))
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(int(sampling.top_k)))
        if sampling.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(float(sampling.top_p)))
        self.uniforms, self.prompt_width = uniforms, prompt_width

    @staticmethod
    def draw(groups: Sequence[RowGroup], steps: int, device: torch.device) -> Tensor:
        """Uniform numbers for ``steps`` tokens of every row, shape ``(rows, steps)``, float64: each group's rows
        from its own generator, in order (a generator shared by several groups is drawn from in row order)."""
        parts = [torch.rand(stop - start, steps, generator=gen, dtype=torch.float64, device=device)
                 for start, stop, gen in groups]
        return torch.cat(parts)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Scores ``(b, V)`` that select the drawn tokens, from the batch's ``input_ids`` ``(b, L)`` and next-token
        ``scores`` ``(b, V)``."""
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        t = input_ids.shape[1] - self.prompt_width
        cdf = torch.softmax(scores.double(), dim=-1).cumsum(dim=-1)
        total = cdf[:, -1:]
        # the first token whose cumulative probability exceeds u * total (u < 1: never past the last likely token)
        target = torch.minimum(self.uniforms[:, t : t + 1] * total, torch.nextafter(total, torch.zeros_like(total)))
        picked = torch.searchsorted(cdf, target, right=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, picked, 0.0)


class HFEngine:
    """Rollouts with transformers ``generate``: batched, left-padded, KV-cached.

    Args:
        batch_size: the most sequences per ``generate`` call, rounded up to whole prompt groups (the ``n``
            samples of a prompt are always generated together); None: every prompt of a rollout in one call
            (fastest on CPU, where each decoding step costs little more for more rows).
        stop_token_ids: extra token ids that end a response (besides the tokenizer's EOS and the model's
            ``generation_config.eos_token_id``).
        share_prompt_prefill: run the prompt through the model once per prompt, not once per sample: the KV cache
            of all its tokens but the last is computed for the P prompts of a call and repeated for their ``n``
            samples before ``generate`` (which then starts from the last prompt token). Off: ``generate`` encodes
            every one of the ``P * n`` rows. Needs a model whose cache has ``batch_repeat_interleave`` (else it is
            not shared).
        copy_weights: sample from a copy of the policy (refreshed at every weight sync) instead of the policy
            itself: what ``data.background_rollouts`` needs, since the trainer updates the policy meanwhile. Not for
            a policy sharded by FSDP2 (its parameters are ``DTensor`` shards).
        device: where the copy lives, e.g. ``"cuda:1"`` (None: the policy's device); only with ``copy_weights``.
    """

    logprobs_by_default = False  # samples from the trainer's model (or an exact copy): its log-probs are the trainer's

    def __init__(
        self, batch_size: int | None = None, stop_token_ids: list[int] | None = None, share_prompt_prefill: bool = True,
        copy_weights: bool = False, device: str | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (one call for the whole rollout), got {batch_size}")
        if device is not None and not copy_weights:
            raise ValueError(f"HFEngine(device={device!r}) needs copy_weights=True (else it samples from the policy)")
        self.batch_size = batch_size
        self.share_prompt_prefill = share_prompt_prefill
        self.stop_token_ids = list(stop_token_ids or [])
        self.copy_weights, self.device = copy_weights, device
        self.weights_copy: nn.Module | None = None  # with copy_weights: the policy's copy (what samples)
        self.model: nn.Module | None = None
        self.eos_token_ids: list[int] = []
        self.pad_token_id: int | None = None

    @property
    def owns_weights(self) -> bool:
        """Whether it can generate while the trainer updates (``data.background_rollouts``): with ``copy_weights``."""
        return self.copy_weights

    # -- RolloutEngine protocol ---------------------------------------------------------------------------------
    def setup(self, tokenizer: Any) -> None:
        """Read EOS and pad ids from ``tokenizer`` (pad falls back to EOS)."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; HFEngine needs one to end responses")
        self.eos_token_ids = sorted({int(eos), *map(int, self.stop_token_ids)})
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(eos if pad is None else pad)

    def update_weights(self, policy: nn.Module) -> None:
        """Sample from ``policy`` from now on: a reference (later updates are seen at once), or with
        ``copy_weights`` its current weights copied into the engine's own model."""
        if not self.copy_weights:
            self.model = _find_generator(policy)
            return
        self.weights_copy = _refresh_copy(self.weights_copy, policy, self.device)
        self.model = _find_generator(self.weights_copy)

    def sleep(self) -> None:
        """No-op: the engine's model (the trainer's, or its copy) stays where it is."""

    def wake_up(self) -> None:
        """No-op: the engine's model (the trainer's, or its copy) stays where it is."""

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        *,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``sampling.n`` samples for each prompt (see :class:`~rlvr_lightning.data.types.RolloutEngine`).

        With one seed per prompt, each prompt's tokens are drawn from a generator of its own, in the same batched
        call as the other prompts. Its samples then depend on the other prompts only through the float rounding of
        the padded batch's logits (about 1e-6 relative): a draw changes only if its random number falls that close
        to the edge between two tokens.
        """
        device = self._check_ready(sampling)
        prompts = [list(map(int, p)) for p in prompt_token_ids]
        gens = self._generators(seed, len(prompts), device)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        model, n = self.model, sampling.n
        assert model is not None
        eos = self.eos_token_ids + [
            e
            for e in _as_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
            if e not in self.eos_token_ids
        ]
        per_call = len(prompts) if self.batch_size is None else max(1, self.batch_size // n)
        samples: list[Sample] = []
        was_training = model.training
        try:
            model.eval()
            # inference mode skips autograd's version counters and view tracking (7% of a small model's decoding on
            # CPU); not under FSDP2, whose unsharded parameters, allocated in the first forward, are written in place
            # by every later all-gather (tests/training/test_distributed.py fails with them made in inference mode)
            with torch.inference_mode(not fsdp_sharded(model)), torch.no_grad():
                for first in range(0, len(prompts), per_call):
                    chunk = range(first, min(first + per_call, len(prompts)))
                    groups = [(j * n, (j + 1) * n, gens[i]) for j, i in enumerate(chunk)]
                    samples.extend(self._generate_chunk(model, [prompts[i] for i in chunk], n, device, sampling,
                                                        eos, groups))
        finally:
            model.train(was_training)
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    # -- internals -----------------------------------------------------------------------------------------------
    def _check_ready(self, sampling: SamplingConfig) -> torch.device:
        """The model's device; errors for a missing model or tokenizer set-up, or invalid sampling settings."""
        if self.model is None:
            raise RuntimeError("HFEngine has no model: call update_weights(policy) before generate")
        if self.pad_token_id is None:
            raise RuntimeError("HFEngine is not set up: call setup(tokenizer) before generate")
        if sampling.n < 1 or sampling.max_new_tokens < 1:
            raise ValueError(f"sampling.n and sampling.max_new_tokens must be >= 1, got {sampling}")
        if sampling.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {sampling.temperature}")
        return next(self.model.parameters()).device

    @staticmethod
    def _generators(
        seed: int | Sequence[int] | None, num_prompts: int, device: torch.device
    ) -> list[torch.Generator | None]:
        """The generator of each prompt: one shared for an int seed, one each for a seed per prompt, None (the
        global RNG) without a seed."""
        if seed is None:
            return [None] * num_prompts
        if isinstance(seed, int):
            return [torch.Generator(device=device).manual_seed(seed)] * num_prompts
        seeds = [int(s) for s in seed]
        if len(seeds) != num_prompts:
            raise ValueError(f"got {len(seeds)} seeds for {num_prompts} prompts")
        return [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def _generation_kwargs(
        self, sampling: SamplingConfig, eos: list[int], groups: Sequence[RowGroup], prompt_width: int, device: Any
    ) -> dict[str, Any]:
        from transformers import GenerationConfig, LogitsProcessorList

        greedy = sampling.temperature == 0
        # Every value that matters is explicit: unset (None) fields would be filled from the model's
        # generation_config. SeededSampler samples, so generate itself always picks the highest score (and ignores
        # temperature, top-p and top-k, left unset).
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=int(sampling.max_new_tokens),
            min_new_tokens=0,
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=bool(sampling.logprobs),
        )
        processors = []
        if not greedy:
            uniforms = SeededSampler.draw(groups, int(sampling.max_new_tokens), device)
            processors.append(SeededSampler(sampling, uniforms, prompt_width))
        return {"generation_config": config, "logits_processor": LogitsProcessorList(processors)}

    def _generate_chunk(
        self,
        model: nn.Module,
        prompts: list[list[int]],
        n: int,
        device: torch.device,
        sampling: SamplingConfig,
        eos: list[int],
        groups: Sequence[RowGroup],
    ) -> list[Sample]:
        """``n`` samples of each of ``prompts`` from one ``generate`` call, row ``i * n + j`` sample ``j`` of prompt
        ``i``."""
        share = self.share_prompt_prefill and n > 1
        width = max(2 if share else 1, max(len(p) for p in prompts))  # sharing needs a prefix of >= 1 column
        ids, mask = pad_rows(prompts, width, self.pad_token_id, left=True)
        ids, mask = ids.to(device), mask.long().to(device)
        cache = _prefill(model, ids, mask, n) if share else {}
        out = model.generate(
            input_ids=ids.repeat_interleave(n, dim=0),
            attention_mask=mask.repeat_interleave(n, dim=0),
            **cache,
            **self._generation_kwargs(sampling, eos, groups, width, device),
        )
        new = out.sequences[:, width:]  # (b, steps)
        lp: Tensor | None = None
        if sampling.logprobs:
            temp = sampling.temperature if sampling.temperature > 0 else 1.0
            # one step at a time: never hold a (b, steps, V) float32 copy
            cols = [
                torch.log_softmax(step_logits.float() / temp, dim=-1)
                .gather(-1, new[:, t : t + 1])
                .squeeze(-1)
                for t, step_logits in enumerate(out.logits)
            ]
            lp = torch.stack(cols, dim=1).cpu()
        new = new.cpu()
        is_eos = torch.isin(new, torch.tensor(eos, dtype=new.dtype))
        has_eos = is_eos.any(dim=1)
        first = torch.where(
            has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, new.shape[1], dtype=torch.long)
        )
        lengths = torch.where(has_eos, first + 1, torch.full_like(first, new.shape[1])).tolist()
        rows, lp_rows = new.tolist(), (lp.tolist() if lp is not None else None)  # one conversion, then slices
        return [
            Sample(
                token_ids=rows[i][:n],
                logprobs=lp_rows[i][:n] if lp_rows is not None else None,
                finish_reason="stop" if stop else "length",
            )
            for i, (n, stop) in enumerate(zip(lengths, has_eos.tolist()))
        ]


def _prefill(model: nn.Module, ids: Tensor, mask: Tensor, n: int) -> dict[str, Any]:
    """``generate``'s cache argument holding the KV cache of ``ids[:, :-1]`` (P prompts, shape ``(P, width)``, with
    ``mask`` ``(P, width)``) repeated ``n`` times per prompt; ``{}`` when the model's cache cannot be repeated."""
    key = cache_argument(model)
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate computes them
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
                use_cache=True, logits_to_keep=1)
    cache = out[key] if key in out else None
    if not hasattr(cache, "batch_repeat_interleave"):
        return {}
    cache.batch_repeat_interleave(n)
    return {key: cache}


def _refresh_copy(copy: nn.Module | None, policy: nn.Module, device: str | None) -> nn.Module:
    """``copy`` holding ``policy``'s current parameters and buffers (a new frozen deep copy on ``device``, or the
    policy's device, when ``copy`` is None)."""
    if copy is None:
        if any(hasattr(p, "full_tensor") for p in policy.parameters()):
            raise ValueError("HFEngine(copy_weights=True) cannot copy a policy sharded by FSDP2 (its parameters are "
                             "DTensor shards): run on one process, or without data.background_rollouts")
        copy = deepcopy(policy).requires_grad_(False).eval()
        return copy.to(device) if device is not None else copy
    with torch.no_grad():
        for dst, src in zip(copy.state_dict(keep_vars=True).values(), policy.state_dict(keep_vars=True).values()):
            dst.copy_(src)
    return copy


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return [int(v) for v in x]
    return [int(x)]
