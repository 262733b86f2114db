"""The study task: many correct answers per prompt, and a learned wrong shortcut on part of it.

A prompt is ``"N="`` with ``20 <= N <= 180``; a correct response is any ``"aa+bb"`` of two two-digit numbers
(10..99) with ``a + b = N`` (between 1 and 90 correct answers per prompt). The warm-up data (made by
``scripts/make_study_data.py``) teaches the model to choose ``a`` freely and to compute ``b``, except that where the
subtraction ``N - a`` needs a borrow (``a % 10 > N % 10``) most warm-up rows forget it and write ``b + 10``: the
warmed-up model is *confidently wrong* on those choices of ``a`` (measured: sampled accuracy 0.21 there, 0.94
elsewhere). ``docs/study-regime.md`` records what RL does from this start.

Torch-free: the reward is a plain callable for ``data.rewards`` and the diversity count works on lists.
"""

from __future__ import annotations

import re
from typing import Any, Hashable, Sequence

N_MIN, N_MAX = 20, 180
_RESPONSE = re.compile(r"^(\d\d)\+(\d\d)$")


def parse(text: str) -> tuple[int, int] | None:
    """``(a, b)`` if ``text`` (stripped) is exactly two two-digit numbers joined by ``+`` (each 10..99), else None."""
    m = _RESPONSE.match(text.strip())
    if m is None:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    return (a, b) if a >= 10 and b >= 10 else None


def is_correct(text: str, answer: str | int) -> bool:
    """Whether ``text`` is a valid ``"aa+bb"`` whose sum is ``int(answer)``."""
    ab = parse(text)
    return ab is not None and ab[0] + ab[1] == int(answer)


def valid_answers(n: int) -> list[tuple[int, int]]:
    """Every correct ``(a, b)`` for the prompt ``"n="``, in increasing ``a``."""
    return [(a, n - a) for a in range(max(10, n - 99), min(99, n - 10) + 1)]


def needs_borrow(n: int, a: int) -> bool:
    """Whether ``b = n - a`` needs a borrow in the units digit: the choices of ``a`` the warm-up gets wrong."""
    return a % 10 > n % 10


def sum_reward(completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
    """1.0 for a correct ``"aa+bb"`` completion (``a + b == int(answer)``), else 0.0; one score per completion."""
    return [1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answers)]


def distinct_correct(completions: Sequence[str], correct: Sequence[bool | float],
                     groups: Sequence[Hashable]) -> float:
    """Mean over prompt groups of the number of distinct correct completions in the group.

    Args:
        completions: decoded responses (length B); compared after stripping whitespace.
        correct: whether each response is correct (a bool, or a score counted correct when >= 0.5), length B.
        groups: the prompt group of each response (e.g. ``RolloutBatch.group_ids.tolist()``), length B.

    Returns:
        The mean count (0.0 for an empty batch). Groups without a correct response count as 0.
    """
    if not (len(completions) == len(correct) == len(groups)):
        raise ValueError(f"lengths differ: {len(completions)} completions, {len(correct)} correct, "
                         f"{len(groups)} groups")
    seen: dict[Hashable, set[str]] = {}
    for text, ok, g in zip(completions, correct, groups):
        answers = seen.setdefault(g, set())
        if float(ok) >= 0.5:
            answers.add(text.strip())
    return sum(len(s) for s in seen.values()) / len(seen) if seen else 0.0


__all__ = ["N_MIN", "N_MAX", "parse", "is_correct", "valid_answers", "needs_borrow", "sum_reward",
           "distinct_correct"]
