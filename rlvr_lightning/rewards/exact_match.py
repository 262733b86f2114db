"""Exact-match rewards: the completion's last number (or the whole completion) equals the reference string."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ExactMatchReward", "extract_last_number"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``"-12"``, ``"3.5"``), with thousands separators removed, or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


class ExactMatchReward:
    """1.0 when the extracted answer equals the reference string (both stripped), else 0.0.

    Args:
        extract: ``"last_number"`` compares the completion's last number, ``"full"`` the whole completion.
    """

    def __init__(self, extract: str = "last_number") -> None:
        if extract not in ("last_number", "full"):
            raise ValueError(f"extract must be 'last_number' or 'full', got {extract!r}")
        self.extract = extract

    def __call__(self, completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        """Score each completion against the answer at the same index."""
        out = []
        for c, a in zip(completions, answers, strict=True):
            got = extract_last_number(c) if self.extract == "last_number" else c.strip()
            out.append(1.0 if got is not None and got == str(a).strip() else 0.0)
        return out
