"""Model output is hostile input: rewards that time out, blow up or meet pathological text cannot stop a run.

The data tests cover ``MathVerifyReward`` on hostile completions alone; here the same inputs go through a real
``rlvr fit`` (scored 0, counted, logged, the run goes on), a reward that raises is counted or (strict) stops the run,
and model text that is Python code is never executed.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reliability_helpers import HOSTILE, FlakyReward, metrics, run_cli

from rlvr_lightning.rewards import MathVerifyReward


def _values(rows, key):
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def test_raising_reward_is_counted_and_the_run_continues(tmp_path):
    FlakyReward.calls, FlakyReward.fail_on = 0, (0, 2)
    cli, _ = run_cli(tmp_path, "--trainer.max_steps", "3", reward="reliability_helpers.FlakyReward")
    assert cli.trainer.global_step == 3
    errors = _values(metrics(tmp_path / "run"), "rollout/reward/errors")
    assert errors == [1.0, 0.0, 1.0]  # one failing reward function on steps 1 and 3, logged per step


def test_raising_reward_stops_the_run_when_strict(tmp_path):
    FlakyReward.calls, FlakyReward.fail_on = 0, (1,)
    with pytest.raises(RuntimeError, match=r"reward backend unavailable \(call 1\)"):
        run_cli(
            tmp_path,
            "--trainer.max_steps",
            "3",
            "--data.strict_rewards",
            "true",
            reward="reliability_helpers.FlakyReward",
        )


def test_hostile_completions_in_a_real_run(tmp_path):
    start = time.monotonic()
    cli, _ = run_cli(tmp_path, "--trainer.max_steps", "1", reward="reliability_helpers.HostileMathReward")
    elapsed = time.monotonic() - start
    assert cli.trainer.global_step == 1
    batch_scores = cli.datamodule.reward_fns[0].inner.last_stats
    assert batch_scores["timeouts"] >= 1 and batch_scores["clipped"] >= 1
    row = next(r for r in metrics(tmp_path / "run") if r.get("rollout/reward/timeouts"))
    assert float(row["rollout/reward/timeouts"]) == batch_scores["timeouts"]
    assert float(row["rollout/reward/errors"]) == 0.0  # hostile text is a zero score, not a reward failure
    assert elapsed < 120  # generous: worker start-up plus one 0.5 s timeout per hostile completion
    cli.datamodule.reward_fns[0].inner.close()


def test_mixed_batch_off_main_thread_and_model_code_never_runs(tmp_path):
    flag = tmp_path / "executed"
    code = f"__import__('os').system('touch {flag}')"
    payloads = [code, f"\\boxed{{{code}}}", f"${code}$", f'eval("{code}")', f"Lambda(x, {code})"]
    good = ["so the answer is \\boxed{7}", "7"]
    completions = HOSTILE + payloads + good
    reward = MathVerifyReward(timeout=0.5)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            start = time.monotonic()
            scores = pool.submit(reward, completions, ["7"] * len(completions)).result(timeout=120)
            elapsed = time.monotonic() - start
        stats = reward.last_stats
    finally:
        reward.close()
    assert scores == [0.0] * (len(HOSTILE) + len(payloads)) + [1.0, 1.0]
    assert not os.path.exists(flag), "model text was executed"
    # every completion is bounded by the timeout; worker restarts after a timeout are counted generously
    assert elapsed < len(completions) * (0.5 + 2.0)
    assert stats["timeouts"] >= 1
