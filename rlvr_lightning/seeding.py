"""One seed for a run: components whose ``seed`` is left at None take the run's global seed.

``rlvr fit --seed_everything S`` (Lightning's ``seed_everything``) stores S in the ``PL_GLOBAL_SEED`` environment
variable before any class of the run is built; :func:`resolve_seed` reads it there. So one flag seeds the model's
initialization and mini-batch shuffling (``model.seed``), the prompt order and sampling (``data.seed``), the
random draws of reweightings such as ``RandomPositiveDrop`` and ``ClipCov``, and vLLM's global seed, while a seed
given explicitly to one of them still wins.
"""

from __future__ import annotations

import os

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


__all__ = ["GLOBAL_SEED_ENV", "resolve_seed"]
