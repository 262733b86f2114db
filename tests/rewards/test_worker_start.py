"""Reward workers start from anywhere: ``rlvr fit``, a guarded or unguarded script, ``python -c``, ``python -``
(stdin), a thread and a notebook-like session; the caller's main module is never re-imported; a worker that dies as
it starts is reported at once with its own error.

Each way of starting runs a small program in a fresh interpreter. The program appends a line to a marker file each
time its top level runs, so a worker start that re-imported the main module would show as a second line.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlvr_lightning.rewards import TimeLimitedReward

REPO = Path(__file__).resolve().parents[2]

# scores two completions with math-verify and with a time-limited reward of the package, prints both
BODY = """
import sys
with open({mark!r}, "a") as f:
    f.write("top level ran\\n")
from rlvr_lightning.rewards import MathVerifyReward, TimeLimitedReward

def score():
    math = MathVerifyReward()
    exact = TimeLimitedReward("rlvr_lightning.rewards.ExactMatchReward", timeout=60)
    try:
        return math(["so \\\\boxed{{4}}", "5"], ["4", "4"]), exact(["x = 4", "5"], ["4", "4"])
    finally:
        math.close()
        exact.close()
"""
RESULT = "([1.0, 0.0], [1.0, 0.0])"


def _run(args: list[str], tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, input=stdin, capture_output=True,
                          text=True, timeout=300)


def _program(tmp_path: Path, tail: str) -> tuple[str, Path]:
    mark = tmp_path / "top_level_runs.txt"
    return BODY.format(mark=str(mark)) + textwrap.dedent(tail), mark


def _check(proc: subprocess.CompletedProcess, mark: Path, expected: str = RESULT) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
    assert mark.read_text().count("top level ran") == 1  # the worker never re-ran the main module
    assert "Timeout is disabled" not in proc.stderr  # math-verify's noise is filtered in the workers


def test_from_an_unguarded_script(tmp_path):
    code, mark = _program(tmp_path, "print(score())\n")
    (tmp_path / "unguarded.py").write_text(code)
    _check(_run(["unguarded.py"], tmp_path), mark)


def test_from_a_guarded_script(tmp_path):
    code, mark = _program(tmp_path, 'if __name__ == "__main__":\n    print(score())\n')
    (tmp_path / "guarded.py").write_text(code)
    _check(_run(["guarded.py"], tmp_path), mark)


def test_from_python_c(tmp_path):
    code, mark = _program(tmp_path, "print(score())\n")
    _check(_run(["-c", code], tmp_path), mark)


def test_from_python_stdin(tmp_path):
    code, mark = _program(tmp_path, "print(score())\n")
    _check(_run(["-"], tmp_path, stdin=code), mark)


def test_from_threads_of_an_unguarded_script(tmp_path):
    code, mark = _program(tmp_path, """
        import threading
        from concurrent.futures import ThreadPoolExecutor

        out = []
        t = threading.Thread(target=lambda: out.append(score()))
        t.start()
        t.join()
        with ThreadPoolExecutor(2) as pool:
            out += list(pool.map(lambda _: score(), range(2)))
        assert len(set(map(str, out))) == 1 and len(out) == 3, out
        print(out[0])
    """)
    (tmp_path / "threads.py").write_text(code)
    _check(_run(["threads.py"], tmp_path), mark)


# A notebook kernel runs cells with ``exec`` in a ``__main__`` module that has no file; its launcher is a module.
NOTEBOOK = '''
import sys, types
main = types.ModuleType("__main__")
sys.modules["__main__"] = main
cells = {cells!r}
for cell in cells:
    exec(compile(cell, "<cell>", "exec"), main.__dict__)
'''


def test_from_a_notebook_like_session(tmp_path):
    code, mark = _program(tmp_path, "")
    cells = [
        code,
        "print(score())",
        # a reward defined in a cell cannot run in a worker: refused at once, with the way out
        textwrap.dedent("""
            def my_reward(completions, answers):
                return [1.0] * len(completions)
            try:
                TimeLimitedReward(my_reward)
            except ValueError as err:
                print("refused:", "importable module" in str(err))
        """),
    ]
    (tmp_path / "kernel.py").write_text(NOTEBOOK.format(cells=cells))
    proc = _run(["kernel.py"], tmp_path)
    _check(proc, mark, expected="refused: True")
    assert proc.stdout.strip().splitlines()[-2] == RESULT


def test_from_rlvr_fit(tmp_path):
    """The smoke run's default reward is math-verify: one step through the command, in a fresh process."""
    args = ["-m", "rlvr_lightning.cli", "fit", "--config", str(REPO / "configs" / "smoke.yaml"),
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", "run"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = (tmp_path / "run").glob("version_*/metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("rollout/reward/errors")]
    assert rows and float(rows[0]["rollout/reward/errors"]) == 0.0  # math-verify scored the batch
    assert "Timeout is disabled" not in proc.stderr


# rewards whose worker fails as it starts, in a module found only through sys.path set at run time
FAILING = '''
import os, sys

class RaisesAtStart:
    def __init__(self):
        raise ValueError("no licence key for the checker")
    def __call__(self, completions, answers):
        return [0.0] * len(completions)

class DiesAtStart:
    def __init__(self):
        sys.stderr.write("checker library missing: libfoo.so\\n")
        sys.stderr.flush()
        os._exit(3)
    def __call__(self, completions, answers):
        return [0.0] * len(completions)
'''


@pytest.fixture
def failing_rewards(tmp_path, monkeypatch):
    (tmp_path / "failing_rewards.py").write_text(FAILING)
    monkeypatch.syspath_prepend(str(tmp_path))  # the worker gets this process's sys.path
    return "failing_rewards"


@pytest.mark.parametrize("name,message", [
    ("RaisesAtStart", r"did not start: ValueError: no licence key for the checker"),
    ("DiesAtStart", r"exited with code 3 as it started(.|\n)*checker library missing: libfoo.so"),
])
def test_a_worker_that_fails_at_start_is_reported_at_once_with_its_own_error(failing_rewards, name, message):
    reward = TimeLimitedReward(f"{failing_rewards}.{name}", startup_timeout=600)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        reward(["a"], ["1"])
    assert time.monotonic() - start < 60  # not after the 600 s start-up limit
    reward.close()
