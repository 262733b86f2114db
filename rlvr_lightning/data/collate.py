"""Turning engine samples and their rewards into a ``RolloutBatch``: padding of prompts and responses.

Shapes: P prompts, B sequences, Tp prompt tokens, T response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlvr_lightning.data.types import RolloutBatch, Sample

__all__ = ["collate_samples"]


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
    b = len(samples)
    tp = max(len(prompt_ids[i]) for i in prompt_index)
    t = max(1, max(len(s.token_ids) for s in samples))
    p_ids = torch.full((b, tp), pad_token_id, dtype=torch.long)
    p_mask = torch.zeros((b, tp), dtype=torch.bool)
    r_ids = torch.full((b, t), pad_token_id, dtype=torch.long)
    r_mask = torch.zeros((b, t), dtype=torch.bool)
    with_lp = all(s.logprobs is not None for s in samples)
    r_lp = torch.zeros((b, t), dtype=torch.float32) if with_lp else None
    for j, (i, s) in enumerate(zip(prompt_index, samples, strict=True)):
        p = prompt_ids[i]
        p_ids[j, tp - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        p_mask[j, tp - len(p) :] = True
        n = len(s.token_ids)
        r_ids[j, :n] = torch.tensor(s.token_ids, dtype=torch.long)
        r_mask[j, :n] = True
        if r_lp is not None:
            r_lp[j, :n] = torch.tensor(s.logprobs, dtype=torch.float32)
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
