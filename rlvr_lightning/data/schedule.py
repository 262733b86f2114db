"""Which prompts and sampling seeds each training step gets, on each rank: deterministic in the seed and the step.

The prompt order is a fresh seeded permutation for each data epoch; step ``k`` of an epoch takes the ``k``-th slice
of ``prompts_per_step`` prompts, and rank ``r`` of ``W`` takes the ``r``-th of its ``W`` equal parts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mix_seed", "step_prompt_indices", "step_sampling_seed"]


def mix_seed(*values: int) -> int:
    """A 31-bit seed mixed from ``values`` (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0] & 0x7FFFFFFF)


def step_prompt_indices(
    step: int, *, seed: int, num_prompts: int, prompts_per_step: int, world_size: int = 1, rank: int = 0
) -> list[int]:
    """Indices of this rank's prompts for training step ``step``; one epoch is ``num_prompts // prompts_per_step``
    steps (``num_prompts >= prompts_per_step``, and ``prompts_per_step`` divisible by ``world_size``)."""
    epoch, k = divmod(step, num_prompts // prompts_per_step)
    order = np.random.default_rng([seed, epoch]).permutation(num_prompts)
    ids = order[k * prompts_per_step : (k + 1) * prompts_per_step]
    local = prompts_per_step // world_size
    return [int(i) for i in ids[rank * local : (rank + 1) * local]]


def step_sampling_seed(
    step: int, *, seed: int, prompts_per_step: int, world_size: int = 1, rank: int = 0, per_prompt: bool = False
) -> int | list[int]:
    """The engine seed of training step ``step`` on this rank; with ``per_prompt``, one seed per prompt derived from
    the prompt's position in the step over all ranks (so rollouts do not depend on the world size)."""
    if per_prompt:
        local = prompts_per_step // world_size
        return [mix_seed(seed, step, rank * local + j, 1) for j in range(local)]
    return mix_seed(seed, step, rank)
