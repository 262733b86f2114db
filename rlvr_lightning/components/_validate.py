"""Hyper-parameter checks shared by the built-in components; errors name the option and valid range."""

from __future__ import annotations

import math
from typing import Iterable


def check_range(
    owner: str,
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it lies in the interval, else raise ``ValueError`` naming ``owner.name``."""
    v = float(value)
    ok = not math.isnan(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{owner}: {name} must be in {lo}, {hi}, got {value!r}")
    return v


def check_choice(owner: str, name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{owner}: unknown {name} {value!r}; valid choices: {', '.join(map(repr, choices))}")
    return value
