"""MathVerifyReward: known verdicts, hostile inputs in bounded time off the main thread, counters; helpers."""

from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr_lightning.rewards import ExactMatchReward, extract_last_number, resolve_reward
from rlvr_lightning.rewards import MathVerifyReward


def test_known_cases(math_reward):
    cases = [
        ("The answer is \\boxed{42}", "42", 1.0),
        ("0.5", "1/2", 1.0),
        ("so $\\frac{1}{2}$", "0.5", 1.0),
        ("\\boxed{1+x}", "x+1", 1.0),
        ("\\boxed{43}", "42", 0.0),
        ("I do not know", "42", 0.0),
    ]
    scores = math_reward([c for c, _, _ in cases], [a for _, a, _ in cases])
    assert scores == [s for _, _, s in cases]
    assert math_reward.last_stats["unparsed"] == 1 and math_reward.last_stats["timeouts"] == 0


def test_scores_settable():
    reward = MathVerifyReward(correct_score=2.0, format_score=0.25, failure_score=-1.0, timeout=2.0)
    try:
        assert reward(["\\boxed{3}", "\\boxed{4}", "no digits here"], ["3", "3", "3"]) == [2.0, 0.25, -1.0]
    finally:
        reward.close()


HOSTILE = [
    "{" * 5000 + "}" * 5000,
    "\\boxed{10^{10^{10^{10}}}}",
    "x" * 200_000,
    "\x00\x00\\boxed{\x00}",
    "\ud800\udfff\\boxed{\ud800}",
    "\\frac" * 3000,
    "(" * 3000,
]


def test_hostile_inputs_bounded_in_worker_thread(math_reward):
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.monotonic()
        scores = pool.submit(math_reward, HOSTILE, ["7"] * len(HOSTILE)).result()
        elapsed = time.monotonic() - start
    assert scores == [0.0] * len(HOSTILE)
    stats = math_reward.last_stats
    # each completion is bounded by the 1 s timeout (plus worker restarts)
    assert elapsed < len(HOSTILE) * (math_reward.timeout + 1.0)
    assert stats["clipped"] == sum(len(h) > math_reward.max_chars for h in HOSTILE)
    assert stats["timeouts"] >= 1  # the power tower cannot be checked within 1 s
    # still healthy after killing workers
    assert math_reward(["\\boxed{7}"], ["7"]) == [1.0] and math_reward.last_stats["timeouts"] == 0


def test_concurrent_callers(math_reward):
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(math_reward, [f"\\boxed{{{i}}}", "\\boxed{0}"], [str(i), "1"]) for i in range(3)
        ]
        assert [f.result() for f in futures] == [[1.0, 0.0]] * 3


def test_pickle_and_validation(math_reward):
    clone = pickle.loads(pickle.dumps(math_reward))
    try:
        assert clone(["\\boxed{5}"], ["5"]) == [1.0]
    finally:
        clone.close()
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_reward(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="timeout must be > 0"):
        MathVerifyReward(timeout=0)


def test_exact_match_and_resolve():
    assert extract_last_number("12 + 3 = 1,015.") == "1015"
    assert extract_last_number("none") is None
    assert ExactMatchReward()(["x=15", "15 or 16", "no"], ["15", "15", "15"]) == [1.0, 0.0, 0.0]
    assert ExactMatchReward("full")([" 15 "], ["15"]) == [1.0]
    assert isinstance(resolve_reward("rlvr_lightning.rewards.ExactMatchReward"), ExactMatchReward)
    assert resolve_reward("rlvr_lightning.rewards.extract_last_number") is extract_last_number
    with pytest.raises(ValueError, match="cannot import reward 'nope.fn'"):
        resolve_reward("nope.fn")
