"""The study task: many correct answers per prompt, and a learned wrong shortcut on part of it.

A prompt is ``"N="`` with ``20 <= N <= 180``; a correct response is any ``"aa+bb"`` of two two-digit numbers
(10..99) with ``a + b = N`` (between 1 and 90 correct answers per prompt). The warm-up data (made by
``scripts/make_study_data.py``) teaches the model to choose ``a`` freely and to compute ``b``, except that where the
subtraction ``N - a`` needs a borrow (``a % 10 > N % 10``) most warm-up rows forget it and write ``b + 10``: the
warmed-up model is *confidently wrong* on those choices of ``a`` (measured: sampled accuracy 0.21 there, 0.94
elsewhere). ``docs/study-regime.md`` records what RL does from this start.

Torch-free: the reward is a plain callable for ``data.rewards``. ``RLVRModule`` logs the distinct correct answers
per prompt on every training batch (``train/distinct_correct``, :func:`rlvr_lightning.metrics.distinct_per_group`).
"""

from __future__ import annotations

import re
from typing import Any

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


__all__ = ["N_MIN", "N_MAX", "parse", "is_correct", "valid_answers", "needs_borrow", "sum_reward"]
