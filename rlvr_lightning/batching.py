"""How ``RLVRModule`` splits a rollout batch for its updates, and the checks that the split works.

A rollout batch of P / W * G sequences per rank (P prompts over W ranks, G responses each) is passed over
``ppo_epochs`` times; each pass is shuffled (seeded) and cut into ``num_mini_batches`` equal mini-batches, one
optimizer step each; a mini-batch is cut into micro-batches for gradient accumulation: ``micro_batch_size``
sequences at a time in mini-batch order, or by a token budget (``micro_batch_tokens``) over the sequences sorted by
length, so that each micro-batch holds sequences of similar length and little padding is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def check_update_settings(
    ppo_epochs: int, num_mini_batches: int, micro_batch_size: int | None, max_grad_norm: float | None,
    tis_cap: float | None, max_consecutive_nonfinite: int, entropy_probe_every: int = 0,
    micro_batch_tokens: int | None = None,
) -> None:
    """Refuse update settings that cannot work (``RLVRModule``'s arguments of the same names).

    Raises:
        ValueError: naming the option, e.g. ``model.num_mini_batches must be >= 1, got 0``.
    """
    for name, value in (("ppo_epochs", ppo_epochs), ("num_mini_batches", num_mini_batches),
                        ("max_consecutive_nonfinite", max_consecutive_nonfinite)):
        if value < 1:
            raise ValueError(f"model.{name} must be >= 1, got {value}")
    if entropy_probe_every < 0:
        raise ValueError(f"model.entropy_probe_every must be >= 0 (0: off), got {entropy_probe_every}")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"model.micro_batch_size must be >= 1 or null, got {micro_batch_size}")
    if micro_batch_tokens is not None and micro_batch_tokens < 1:
        raise ValueError(f"model.micro_batch_tokens must be >= 1 or null, got {micro_batch_tokens}")
    if max_grad_norm is not None and max_grad_norm <= 0:
        raise ValueError(f"model.max_grad_norm must be > 0 or null, got {max_grad_norm}")
    if tis_cap is not None and tis_cap < 1:
        raise ValueError(f"model.tis_cap must be >= 1 or null, got {tis_cap}")


def check_rollout_split(P: int, G: int, world: int, num_mini_batches: int, advantage: Any) -> None:
    """Refuse settings under which a rollout batch cannot be split, before any weights are loaded.

    Args:
        P: prompts per step over all ranks (``data.prompts_per_step``).
        G: responses per prompt (``data.num_generations``).
        world: the number of ranks.
        num_mini_batches: optimizer steps per pass (``model.num_mini_batches``).
        advantage: the advantage component (its ``needs_groups`` asks for ``G >= 2``).

    Raises:
        ValueError: a group size below 2 with a group-normalized advantage; ``P`` not divisible by the world size;
            the sequences per rank and step not divisible into ``num_mini_batches`` equal mini-batches.
            (Micro-batches may be uneven: losses use the mini-batch's global token counts.)
    """
    if advantage.needs_groups and G < 2:
        raise ValueError(
            f"data.num_generations must be >= 2 with the group-normalized advantage "
            f"{type(advantage).__name__} (a group of 1 has no baseline: every advantage would be 0), "
            f"got {G}; raise data.num_generations or choose an advantage with needs_groups=False"
        )
    if P % world:
        raise ValueError(f"data.prompts_per_step={P} must be divisible by the world size {world}")
    local = P // world * G
    if local % num_mini_batches:
        valid = [d for d in range(1, local + 1) if local % d == 0]
        raise ValueError(
            f"model.num_mini_batches={num_mini_batches} must divide the sequences per step and rank, "
            f"data.prompts_per_step / world_size * data.num_generations = {P} / {world} * {G} = {local}; "
            f"valid values: {valid}"
        )


def mini_batches(n: int, *, ppo_epochs: int, num_mini_batches: int, shuffle: bool, seed: int) -> list[Tensor]:
    """The index sets of the mini-batches of one rollout batch of ``n`` sequences, in update order.

    Each of the ``ppo_epochs`` passes is a permutation drawn from ``torch.Generator().manual_seed(seed)`` (or the
    identity without ``shuffle``) cut into ``num_mini_batches`` chunks; each index set has shape ``(n / M,)``.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(ppo_epochs):
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        out.extend(order.chunk(num_mini_batches))
    return out


def total_epochs(max_epochs: int | None, max_steps: int, steps_per_epoch: int, updates_per_step: int) -> int:
    """Planned data epochs: the earlier end of ``max_epochs`` and ``max_steps`` optimizer steps (-1 if unknown).

    Args:
        max_epochs: the trainer's epoch limit (None or <= 0: none).
        max_steps: the trainer's optimizer-step limit (<= 0: none).
        steps_per_epoch: rollout batches per data epoch.
        updates_per_step: optimizer steps per rollout batch (``ppo_epochs * num_mini_batches``).
    """
    ends = []
    if max_epochs is not None and max_epochs > 0:
        ends.append(int(max_epochs))
    if max_steps > 0 and steps_per_epoch:
        ends.append(max(1, -(-max_steps // (updates_per_step * steps_per_epoch))))
    return min(ends) if ends else -1


def micro_batches(
    index: Tensor, size: int | None, *, tokens: int | None = None, prompt_lengths: Tensor | None = None,
    response_lengths: Tensor | None = None,
) -> list[Tensor]:
    """The micro-batches of the mini-batch ``index`` (shape ``(n,)``), each an index tensor into the rollout batch.

    Without ``tokens``: ``index`` cut into chunks of ``size`` (None: one chunk), in order. With ``tokens``: the
    sequences sorted by real length (prompt + response, longest first; ties keep their order) and packed greedily
    so that each micro-batch's padded size, ``count * (longest prompt + longest response)``, stays within
    ``tokens`` (a longer sequence gets a micro-batch of its own) and its count within ``size`` when that is set.

    Args:
        index: indices of the mini-batch's sequences, shape ``(n,)``.
        size: most sequences per micro-batch (None: no limit).
        tokens: most padded tokens per micro-batch (None: cut by ``size`` alone).
        prompt_lengths: real prompt tokens of every sequence of the rollout batch, shape ``(B,)``.
        response_lengths: real response tokens of every sequence of the rollout batch, shape ``(B,)``.
    """
    if tokens is None:
        return list(index.split(size or max(len(index), 1)))
    p = prompt_lengths[index].tolist()
    r = response_lengths[index].tolist()
    order = sorted(range(len(index)), key=lambda i: -(p[i] + r[i]))  # stable: ties keep mini-batch order
    groups: list[list[int]] = []
    longest = (0, 0)
    for i in order:
        wider = (max(longest[0], p[i]), max(longest[1], r[i]))
        if groups and (len(groups[-1]) + 1) * sum(wider) <= tokens and len(groups[-1]) < (size or len(index)):
            groups[-1].append(i)
            longest = wider
        else:
            groups.append([i])
            longest = (p[i], r[i])
    return [index[torch.tensor(g, dtype=torch.long)] for g in groups]


def padded_tokens(groups: list[Tensor], prompt_lengths: Tensor, response_lengths: Tensor) -> int:
    """Tokens a forward computes over ``groups`` (micro-batch index tensors) when each is padded to its longest
    prompt and longest response: ``sum count * (max prompt + max response)``. Lengths have shape ``(B,)``."""
    return sum(len(g) * int(prompt_lengths[g].max() + response_lengths[g].max()) for g in groups if len(g))


def split_to(groups: list[Tensor], count: int) -> list[Tensor]:
    """``groups`` (micro-batch index tensors) with the largest split in two until there are ``count`` of them, so
    that every rank runs as many forwards (collectives under FSDP/DDP must pair up). Needs ``count`` <= the total
    number of sequences."""
    groups = list(groups)
    while len(groups) < count:
        i = max(range(len(groups)), key=lambda j: len(groups[j]))
        if len(groups[i]) < 2:
            raise ValueError(f"cannot cut {sum(len(g) for g in groups)} sequences into {count} micro-batches")
        half = (len(groups[i]) + 1) // 2
        groups[i:i + 1] = [groups[i][:half], groups[i][half:]]
    return groups
