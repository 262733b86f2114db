"""The commands of docs/quickstart.md run as written: the Python example (in a subprocess), the CPU commands of "Your
own run" for real (a model folder and a data file made here stand in for ``/path/to/...``; the SmolLM2 command is run
by ``test_smollm2_cpu.py``), and the GPU commands through the CLI's config check (``--print_config``)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from toy_training import REPO

from rlvr_lightning.cli import cli_main

DOC = (REPO / "docs" / "quickstart.md").read_text()


def section_commands(title: str) -> list[list[str]]:
    """The ``rlvr fit`` commands (as argument lists, without ``rlvr``) of the bash blocks of section ``title``."""
    body = re.search(rf"^### {title}\n(.*?)(?=^##)", DOC + "\n## end", flags=re.S | re.M).group(1)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("rlvr fit "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def test_quickstart_python_example_runs(tmp_path):
    code = re.search(r"## From Python.*?```python\n(.*?)```", DOC, flags=re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lam = float(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= lam <= 1.0 and lam > 0  # two steps with entropy above delta raise lambda from 0


def test_every_rlvr_command_of_the_own_run_section_is_covered():
    own = DOC[DOC.index("## Your own run"):]
    total = len(re.findall(r"^rlvr fit ", own, flags=re.M))
    cpu, one, eight = (section_commands(t) for t in ("On a CPU", "On one GPU", "On eight GPUs"))
    assert len(cpu) == 2 and len(one) == 2 and len(eight) == 2 and total == 6
    assert "configs/smollm2_cpu.yaml" in cpu[0] and "configs/quickstart.yaml" in cpu[1]


def test_cpu_own_run_command_runs(tmp_path):
    """The doc's command with a model folder (a seeded random init of the tiny Qwen2, saved with its weights) and a
    JSONL file with the doc's field names in place of the placeholders; it logs under ``tmp_path``."""
    from rlvr_lightning.models import load_causal_lm

    model = load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, seed=1)
    model.save_pretrained(tmp_path / "model")
    for f in (REPO / "assets" / "tiny-qwen2").iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp_path / "model" / f.name)
    rows = [{"question": f"{i}+{i}=", "solution": 2 * i} for i in range(24)]  # 6 steps an epoch: no epoch end
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (command,) = [c for c in section_commands("On a CPU") if "configs/quickstart.yaml" in c]
    args = [a.replace("/path/to/model", str(tmp_path / "model")).replace("/path/to/problems.jsonl",
                                                                         str(tmp_path / "problems.jsonl"))
            for a in command]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        cli = cli_main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    finally:
        os.chdir(cwd)
    rows = [r for p in (tmp_path / "runs").rglob("metrics.csv") for r in csv.DictReader(open(p))
            if r.get("train/reward_mean")]
    assert len(rows) == 2 and all(float(r["train/response_length_mean"]) > 0 for r in rows)
    assert cli.datamodule.train_prompts[3].answer == "6" and type(cli.datamodule.engine).__name__ == "HFEngine"


GPU_COMMANDS = section_commands("On one GPU") + section_commands("On eight GPUs")


@pytest.mark.parametrize("command", GPU_COMMANDS, ids=[" ".join(c[2:5]) for c in GPU_COMMANDS])
def test_gpu_commands_pass_the_config_check(command):
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            cli_main([*command, "--print_config"])
    finally:
        os.chdir(cwd)
    assert exit_info.value.code in (0, None), out.getvalue()
    cfg = yaml.safe_load(out.getvalue())
    if "--model.model" in command:
        assert cfg["model"]["model"] == command[command.index("--model.model") + 1]
    if "--data.train_files" in command:  # the file replaces the dataset the config names
        assert cfg["data"]["train_files"] == command[command.index("--data.train_files") + 1]
        assert cfg["data"]["train_dataset"] is None
    assert cfg["trainer"]["devices"] == (1 if "one_gpu" in command[2] or "quickstart" in command[2] else 8)
