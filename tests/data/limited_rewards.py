"""Rewards for the ``TimeLimitedReward`` tests; imported by path in the worker process."""

from __future__ import annotations

import os
import time
from typing import Any


def length_reward(completions: list[str], answers: list[str], **kw: Any) -> list[float]:
    return [float(len(c)) for c in completions]


def hangs_on_marker(completions: list[str], answers: list[str]) -> list[float]:
    """Never returns for a chunk holding a completion with ``HANG`` in it."""
    if any("HANG" in c for c in completions):
        time.sleep(600)
    return [1.0] * len(completions)


def prompt_length(completions: list[str], answers: list[str], prompts: list[str]) -> list[float]:
    return [float(len(p)) for p in prompts]


def raises(completions: list[str], answers: list[str]) -> list[float]:
    raise KeyError("no such test case")


class WorkerPid:
    """Scores every completion with the id of the process it runs in."""

    def __call__(self, completions: list[str], answers: list[str]) -> list[float]:
        return [float(os.getpid())] * len(completions)


class NotCallable:
    """A class whose instances cannot score anything."""


class CountsInstances:
    """Counts its instances in the process it is created in."""

    made = 0

    def __init__(self) -> None:
        type(self).made += 1

    def __call__(self, completions: list[str], answers: list[str]) -> list[float]:
        return [float(type(self).made)] * len(completions)
