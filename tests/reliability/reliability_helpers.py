"""Helpers of the reliability tests: in-process ``rlvr fit`` runs, and rewards and components that misbehave."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from rlvr_lightning.components import Reweight, ReweightContext

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def digit_reward(completions: list[str], answers: list[str], **kw: Any) -> list[float]:
    """Fraction of digit characters in each completion: varied scores even from a random policy."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


class FlakyReward:
    """Raises on the calls listed in ``fail_on`` (0-based), otherwise scores like :func:`digit_reward`."""

    calls = 0
    fail_on: tuple[int, ...] = (0,)

    def __call__(self, completions: list[str], answers: list[str], **kw: Any) -> list[float]:
        n = type(self).calls
        type(self).calls += 1
        if n in type(self).fail_on:
            raise RuntimeError(f"reward backend unavailable (call {n})")
        return digit_reward(completions, answers)


class BadValueReweight(Reweight):
    """Uniform weights, except that the first ``len(values)`` calls multiply every weight by ``values[i]``.

    ``values`` of ``nan`` or ``inf`` make that update's loss and gradient non-finite.
    """

    calls = 0

    def __init__(self, values: list[float] | None = None) -> None:
        self.values = [float("nan")] if values is None else list(values)

    def __call__(self, ctx: ReweightContext) -> torch.Tensor:
        i = type(self).calls
        type(self).calls += 1
        w = ctx.mask.float()
        return w * self.values[i] if i < len(self.values) else w


def write_jsonl(path: Path, rows: list[Any]) -> str:
    """Write ``rows`` (objects, or raw strings written as-is) as lines of ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    return str(path)


def good_rows(n: int = 8) -> list[dict[str, str]]:
    return [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(n)]


def cli_args(
    tmp_path: Path, *extra: str, name: str = "run", reward: str = "reliability_helpers.digit_reward"
):
    """Arguments of ``rlvr fit`` on the smoke config, logging under ``tmp_path``."""
    return [
        "fit",
        "--config",
        SMOKE,
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.logger.init_args.name",
        name,
        "--data.rewards",
        reward,
        "--trainer.limit_val_batches",
        "0",  # no periodic validation
        *extra,
    ]


def run_cli(tmp_path: Path, *extra: str, **kw: Any) -> tuple[Any, str]:
    """``rlvr fit`` in this process; returns ``(cli, stderr)``. A refused config raises (ValueError, SystemExit...)."""
    from rlvr_lightning.cli import cli_main

    cwd, argv = os.getcwd(), sys.argv
    os.chdir(REPO)  # the smoke config names assets/ relative to the repository
    sys.argv = ["rlvr"]  # pytest's own arguments are not the CLI's
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return cli_main(cli_args(tmp_path, *extra, **kw)), err.getvalue()
    except SystemExit as e:
        raise CLIError(e.code, err.getvalue()) from None
    finally:
        os.chdir(cwd)
        sys.argv = argv


class CLIError(Exception):
    """The CLI exited (a parse error): ``code`` and what it wrote to stderr."""

    def __init__(self, code: Any, stderr: str) -> None:
        super().__init__(f"exit {code}: {stderr[-2000:]}")
        self.code, self.stderr = code, stderr


HOSTILE = [
    "{" * 5000 + "}" * 5000,  # nested braces by the thousand
    "\\boxed{10^{10^{10^{10}}}}",  # a power tower no checker can expand in time
    "7" * 5 + "x" * 200_000,  # 200k characters of junk
    "\x00\x00\\boxed{\x00}",  # NUL bytes
    "\ud800\udfff\\boxed{\ud800}",  # invalid Unicode (lone surrogates)
]


class HostileMathReward:
    """math-verify on model output where the first ``len(HOSTILE)`` completions are replaced by hostile text."""

    def __init__(self) -> None:
        from rlvr_lightning.rewards import MathVerifyReward

        self.inner = MathVerifyReward(timeout=0.5)
        self.last_stats: dict[str, int] = {}

    def __call__(self, completions: list[str], answers: list[str], **kw: Any) -> list[float]:
        completions = HOSTILE + list(completions[len(HOSTILE) :])
        scores = self.inner(completions, answers)
        self.last_stats = self.inner.last_stats
        return scores


def metrics(run_dir: Path) -> list[dict[str, str]]:
    """Rows of the run's ``metrics.csv``."""
    import csv

    path = next(Path(run_dir).rglob("metrics.csv"))
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def alternating_on_odd_answers(completions: list[str], answers: list[str], **kw: Any) -> list[float]:
    """Scores 0, 1, 0, 1, ... for questions with an odd answer (signal), 0 for even answers (zero variance)."""
    return [float(i % 2) if int(a) % 2 else 0.0 for i, a in enumerate(answers)]


class NoSignalFirstCalls:
    """Scores every completion 0 on the first ``n`` calls (batches without signal), then alternates 0, 1, ..."""

    calls = 0
    n = 1

    def __call__(self, completions: list[str], answers: list[str], **kw: Any) -> list[float]:
        type(self).calls += 1
        if type(self).calls <= type(self).n:
            return [0.0] * len(completions)
        return [float(i % 2) for i in range(len(completions))]
