"""One seed for a run: components whose ``seed`` is left at None take the run's global seed.

``rlvr fit --seed_everything S`` (Lightning's ``seed_everything``) stores S in the ``PL_GLOBAL_SEED`` environment
variable before any class of the run is built; :func:`resolve_seed` reads it there. So one flag seeds the model's
initialization and mini-batch shuffling (``model.seed``), the prompt order and sampling (``data.seed``), the
random draws of reweightings such as ``RandomPositiveDrop`` and ``ClipCov``, and vLLM's global seed, while a seed
given explicitly to one of them still wins.

:func:`seeded_rng` runs a block with torch's global generator seeded and restores it afterwards: the module's
updates run under a seed derived from ``(seed, rollout step)``, so dropout (LoRA's, or the model's) draws the same
masks in a resumed run as in an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

GLOBAL_SEED_ENV = "PL_GLOBAL_SEED"


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or the run's global seed when it is None (0 when no global seed was set).

    Example:
        >>> resolve_seed(7)
        7
    """
    if seed is not None:
        return int(seed)
    return int(os.environ.get(GLOBAL_SEED_ENV, "0"))


@contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's CPU generator (and ``device``'s, if it is a CUDA device) seeded to ``seed``; the
    generators' previous states are restored afterwards.

    Example:
        >>> with seeded_rng(3):
        ...     a = torch.rand(2)
        >>> with seeded_rng(3):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


__all__ = ["GLOBAL_SEED_ENV", "resolve_seed", "seeded_rng"]
