"""Turning engine samples and their rewards into a ``RolloutBatch``: decoding, scoring, padding.

Shapes: P prompts, B sequences, Tp prompt tokens, T response tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from rlvr_lightning.data.prompts import PromptRecord
from rlvr_lightning.data.types import RolloutBatch, Sample

__all__ = ["assemble_batch", "collate_samples", "pad_rows", "unpack_prompts"]

ScoreFn = Callable[[list[str], list[str], list[str]], tuple[list[float], dict[str, float]]]


def pad_rows(rows: Sequence[Sequence[int]], width: int, value: int, *, left: bool) -> tuple[Tensor, Tensor]:
    """Token rows padded to ``width`` on the left or right, in one vectorized fill.

    Args:
        rows: n rows of token ids, each at most ``width`` long.
        width: the padded length.
        value: the padding id.
        left: pad on the left (prompts) instead of the right (responses).

    Returns:
        ``(ids, mask)``: long ids and bool mask (True on real tokens), each shape ``(n, width)``.
    """
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
    pos = torch.arange(width)
    mask = pos >= (width - lens)[:, None] if left else pos < lens[:, None]
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    ids[mask] = torch.tensor([t for r in rows for t in r], dtype=torch.long)  # row-major: each row's tokens in order
    return ids, mask


def collate_samples(
    prompt_ids: Sequence[Sequence[int]],
    samples: Sequence[Sample],
    prompt_index: Sequence[int],
    scores: Sequence[float],
    *,
    pad_token_id: int,
) -> RolloutBatch:
    """Pad prompts (left) and responses (right) into a :class:`RolloutBatch` (text fields left empty).

    Args:
        prompt_ids: token ids of each of the P prompts.
        samples: the B generated samples.
        prompt_index: for each sample, the index of its prompt (becomes ``group_ids``), length B.
        scores: reward of each sample, length B.
        pad_token_id: the id that fills padding.
    """
    if len(prompt_index) != len(samples):
        raise ValueError(f"got {len(prompt_index)} prompt indices for {len(samples)} samples")
    prompts = [prompt_ids[i] for i in prompt_index]
    p_ids, p_mask = pad_rows(prompts, max(len(p) for p in prompts), pad_token_id, left=True)
    r_ids, r_mask = pad_rows([s.token_ids for s in samples], max(1, max(len(s.token_ids) for s in samples)),
                             pad_token_id, left=False)
    r_lp = None
    if all(s.logprobs is not None for s in samples):
        r_lp = torch.zeros(r_ids.shape, dtype=torch.float32)
        r_lp[r_mask] = torch.tensor([v for s in samples for v in s.logprobs], dtype=torch.float32)
    return RolloutBatch(
        prompt_ids=p_ids,
        prompt_mask=p_mask,
        response_ids=r_ids,
        response_mask=r_mask,
        group_ids=torch.tensor(list(prompt_index), dtype=torch.long),
        scores=torch.tensor(list(scores), dtype=torch.float32),
        truncated=torch.tensor([s.finish_reason == "length" for s in samples], dtype=torch.bool),
        rollout_logprobs=r_lp,
    )


def unpack_prompts(
    prompts: Sequence[PromptRecord] | Sequence[dict[str, Any]],
) -> tuple[list[str], list[list[int]], list]:
    """Texts, token ids and answers of prompt records, or of dicts with ``"prompt_ids"``, ``"answer"`` and
    optionally ``"prompt"``."""
    texts, ids, answers = [], [], []
    for p in prompts:
        if isinstance(p, PromptRecord):
            text, token_ids, answer = p.text, p.token_ids, p.answer
        else:
            text, token_ids, answer = p.get("prompt", ""), list(p["prompt_ids"]), p["answer"]
        texts.append(text)
        ids.append(token_ids)
        answers.append(answer)
    return texts, ids, answers


def assemble_batch(
    groups: Sequence[Sequence[Sample]], prompt_ids: Sequence[Sequence[int]], texts: Sequence[str],
    answers: Sequence[Any], *, tokenizer: Any, score: ScoreFn, temperature: float, generate_seconds: float,
) -> RolloutBatch:
    """Decode the engine's samples (one group per prompt), score them and pad them into a batch.

    Args:
        groups: the samples of each of the P prompts, as the engine returned them.
        prompt_ids, texts, answers: token ids, text and reference answer of each prompt (length P).
        tokenizer: decodes the responses; its pad (else eos) token fills padding.
        score: ``score(completions, answers, prompts) -> (scores, info)``, one entry per sample.
        temperature: the sampling temperature, carried on the batch (``RolloutBatch.temperature``).
        generate_seconds: the engine's time, logged with the decoding time as ``time/rollout``.
    """
    t0 = time.perf_counter()
    samples = [s for g in groups for s in g]
    completions = tokenizer.batch_decode([s.token_ids for s in samples], skip_special_tokens=True)
    t1 = time.perf_counter()
    rep = [i for i, g in enumerate(groups) for _ in g]
    scores, reward_info = score(completions, [answers[i] for i in rep], [texts[i] for i in rep])
    t2 = time.perf_counter()
    pad = tokenizer.pad_token_id
    batch = collate_samples(prompt_ids, samples, rep, scores,
                            pad_token_id=tokenizer.eos_token_id if pad is None else pad)
    batch.prompts = [texts[i] for i in rep]
    batch.completions = completions
    batch.answers = [answers[i] for i in rep]
    batch.info = {
        "time/rollout": generate_seconds + (t1 - t0),
        "time/scoring": t2 - t1,
        "tokens/generated": float(sum(len(s.token_ids) for s in samples)),
        **reward_info,
    }
    batch.temperature = temperature
    return batch
