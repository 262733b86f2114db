"""``HFEngine``: the rollout engine built on transformers ``generate`` (the CPU default).

It samples from the trainer's own policy module (no copy of the weights): :meth:`HFEngine.update_weights` keeps a
reference, and :meth:`HFEngine.generate` runs the model in eval mode under ``torch.no_grad()``, restoring the
previous train/eval mode afterwards. Sampling is reproducible with ``seed`` and leaves the global RNG untouched.

Token log-probs (``sampling.logprobs``) are those of the sampling distribution before top-p/top-k truncation:
``log_softmax(logits / temperature)`` of the chosen token (temperature 1 when greedy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlvr_lightning.data.types import Sample, SamplingConfig

__all__ = ["HFEngine"]


def _find_generator(policy: nn.Module) -> nn.Module:
    """The module with ``generate``: ``policy`` or its ``module`` (DDP), ``model`` or ``policy`` attribute."""
    for cand in (policy, *(getattr(policy, a, None) for a in ("module", "model", "policy"))):
        if isinstance(cand, nn.Module) and callable(getattr(cand, "generate", None)):
            return cand
    raise TypeError(
        f"{type(policy).__name__} has no `generate` method (nor a `.model` / `.policy` that has one); "
        "HFEngine needs a transformers causal LM"
    )


class HFEngine:
    """Rollouts with transformers ``generate``: batched, left-padded, KV-cached.

    Args:
        batch_size: sequences per ``generate`` call (the ``n`` copies of each prompt are spread over calls).
        stop_token_ids: extra token ids that end a response (besides the tokenizer's EOS and the model's
            ``generation_config.eos_token_id``).
    """

    logprobs_by_default = False  # samples from the trainer's own model: its log-probs are the trainer's

    def __init__(self, batch_size: int = 64, stop_token_ids: list[int] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.stop_token_ids = list(stop_token_ids or [])
        self.model: nn.Module | None = None
        self.eos_token_ids: list[int] = []
        self.pad_token_id: int | None = None

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
        """Sample from ``policy`` from now on (a reference, not a copy: later updates are seen at once)."""
        self.model = _find_generator(policy)

    def sleep(self) -> None:
        """No-op: the engine shares the trainer's model."""

    def wake_up(self) -> None:
        """No-op: the engine shares the trainer's model."""

    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        *,
        seed: int | Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """``sampling.n`` samples for each prompt (see :class:`~rlvr_lightning.data.types.RolloutEngine`).

        With one seed per prompt, each prompt is generated in calls of its own (``n`` sequences, no padding),
        seeded with its seed: slower than one batch over all prompts, but independent of the other prompts.
        """
        if seed is not None and not isinstance(seed, int):
            seeds = list(seed)
            if len(seeds) != len(prompt_token_ids):
                raise ValueError(f"got {len(seeds)} seeds for {len(prompt_token_ids)} prompts")
            return [self.generate([p], sampling, seed=int(s))[0] for p, s in zip(prompt_token_ids, seeds)]
        if self.model is None:
            raise RuntimeError("HFEngine has no model: call update_weights(policy) before generate")
        if self.pad_token_id is None:
            raise RuntimeError("HFEngine is not set up: call setup(tokenizer) before generate")
        if sampling.n < 1 or sampling.max_new_tokens < 1:
            raise ValueError(f"sampling.n and sampling.max_new_tokens must be >= 1, got {sampling}")
        if sampling.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {sampling.temperature}")
        model = self.model
        flat = [list(map(int, p)) for p in prompt_token_ids for _ in range(sampling.n)]
        if any(len(p) == 0 for p in flat):
            raise ValueError("every prompt needs at least one token")
        device = next(model.parameters()).device
        eos = self.eos_token_ids + [
            e
            for e in _as_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
            if e not in self.eos_token_ids
        ]
        gen_kwargs = self._generation_kwargs(sampling, eos)

        samples: list[Sample] = []
        was_training = model.training
        fork = (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
            if seed is not None
            else contextlib.nullcontext()
        )
        try:
            model.eval()
            with fork, torch.no_grad():
                if seed is not None:
                    torch.manual_seed(seed)
                for start in range(0, len(flat), self.batch_size):
                    samples.extend(
                        self._generate_chunk(
                            model, flat[start : start + self.batch_size], device, sampling, eos, gen_kwargs
                        )
                    )
        finally:
            model.train(was_training)
        return [samples[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompt_token_ids))]

    # -- internals -----------------------------------------------------------------------------------------------
    def _generation_kwargs(self, sampling: SamplingConfig, eos: list[int]) -> dict[str, Any]:
        from transformers import GenerationConfig

        greedy = sampling.temperature == 0
        # Every value is explicit: unset (None) fields would be filled from the model's generation_config.
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else float(sampling.temperature),
            top_p=1.0 if greedy else float(sampling.top_p),
            top_k=0 if (greedy or sampling.top_k < 0) else int(sampling.top_k),
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
        return {"generation_config": config}

    def _generate_chunk(
        self,
        model: nn.Module,
        prompts: list[list[int]],
        device: torch.device,
        sampling: SamplingConfig,
        eos: list[int],
        gen_kwargs: dict[str, Any],
    ) -> list[Sample]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **gen_kwargs
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
        result = []
        for i in range(new.shape[0]):
            stop = bool(has_eos[i])
            length = int(first[i]) + 1 if stop else new.shape[1]
            result.append(
                Sample(
                    token_ids=new[i, :length].tolist(),
                    logprobs=lp[i, :length].tolist() if lp is not None else None,
                    finish_reason="stop" if stop else "length",
                )
            )
        return result


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return [int(v) for v in x]
    return [int(x)]
