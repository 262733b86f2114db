"""The Python example of docs/quickstart.md runs as written (in a subprocess, from the repository root)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from toy_training import REPO


def test_quickstart_python_example_runs(tmp_path):
    text = (REPO / "docs" / "quickstart.md").read_text()
    code = re.search(r"## From Python.*?```python\n(.*?)```", text, flags=re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lam = float(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= lam <= 1.0 and lam > 0  # two steps with entropy above delta raise lambda from 0
