"""``TimeLimitedReward``: a user's reward in a worker process, with a wall-clock limit per chunk."""

from __future__ import annotations

import copy
import os
import time

import limited_rewards
import pytest

from rlvr_lightning.rewards import score_completions
from rlvr_lightning.rewards import TimeLimitedReward

COMPLETIONS = ["a", "bb", "ccc", "dddd", "eeeee"]
ANSWERS = ["x"] * 5


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_scores_are_the_inner_rewards(chunk_size):
    reward = TimeLimitedReward("limited_rewards.length_reward", timeout=30, chunk_size=chunk_size)
    try:
        assert reward(COMPLETIONS, ANSWERS) == limited_rewards.length_reward(COMPLETIONS, ANSWERS)
        assert reward.last_stats == {"timeouts": 0}
        assert reward.__name__ == "length_reward"  # logged under the inner reward's name
    finally:
        reward.close()


def test_runs_in_another_process_and_instantiates_a_class_there():
    reward = TimeLimitedReward("limited_rewards.WorkerPid", timeout=30)
    try:
        pids = set(reward(COMPLETIONS, ANSWERS))
        assert len(pids) == 1 and pids != {float(os.getpid())}
        assert set(reward(COMPLETIONS, ANSWERS)) == pids  # one persistent worker serves every call
    finally:
        reward.close()


def test_a_hung_chunk_scores_failure_and_the_worker_is_replaced():
    reward = TimeLimitedReward("limited_rewards.hangs_on_marker", timeout=3.0, chunk_size=1, failure_score=-1.0)
    try:
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning, match="hangs_on_marker overran its 3.0 s limit: 1 completions"):
            scores = reward(["ok", "HANG here", "fine"], ["1", "2", "3"])
        assert scores == [1.0, -1.0, 1.0]
        assert reward.last_stats == {"timeouts": 1}
        assert time.monotonic() - t0 < 120  # the hang itself would take 600 s
        assert reward(["again"], ["1"]) == [1.0]  # a fresh worker took over
        assert reward.last_stats == {"timeouts": 0}
    finally:
        reward.close()


def test_the_data_modules_scoring_counts_the_timeouts():
    reward = TimeLimitedReward("limited_rewards.hangs_on_marker", timeout=3.0, chunk_size=2)
    try:
        with pytest.warns(RuntimeWarning, match="overran"):
            scores, info = score_completions(["a", "HANG", "c"], ["1", "2", "3"], [reward], weights=[1.0])
        assert scores == [0.0, 0.0, 1.0]  # the chunk ["a", "HANG"] timed out as a whole
        assert info["reward/timeouts"] == 2.0 and info["reward/hangs_on_marker/timeouts"] == 2.0
        assert info["reward/errors"] == 0.0
    finally:
        reward.close()


def test_prompts_are_passed_chunk_by_chunk_only_to_rewards_that_take_them():
    prompts = ["p", "pp", "ppp", "pppp", "ppppp"]
    with_prompts = TimeLimitedReward("limited_rewards.prompt_length", timeout=30, chunk_size=2)
    without = TimeLimitedReward("limited_rewards.WorkerPid", timeout=30)
    try:
        assert with_prompts(COMPLETIONS, ANSWERS, prompts=prompts) == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert len(without(COMPLETIONS, ANSWERS, prompts=prompts)) == 5  # would raise TypeError if passed on
    finally:
        with_prompts.close()
        without.close()


def test_an_exception_in_the_reward_names_it():
    reward = TimeLimitedReward("limited_rewards.raises", timeout=30)
    try:
        with pytest.raises(RuntimeError, match="reward raises raised in its worker process: KeyError"):
            reward(COMPLETIONS, ANSWERS)
        with pytest.warns(RuntimeWarning, match="reward raises raised RuntimeError"):
            scores, info = score_completions(COMPLETIONS, ANSWERS, [reward], weights=[1.0])
        assert scores == [0.0] * 5 and info["reward/errors"] == 1.0
    finally:
        reward.close()


def test_a_class_is_instantiated_in_the_worker_only():
    reward = TimeLimitedReward("limited_rewards.CountsInstances", timeout=30)
    try:
        assert reward.__name__ == "CountsInstances"
        assert reward(["a"], ["1"]) == [1.0]  # one instance, in the worker
        assert limited_rewards.CountsInstances.made == 0  # none here
    finally:
        reward.close()


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="cannot import reward 'limited_rewards.nope'"):
        TimeLimitedReward("limited_rewards.nope")
    with pytest.raises(ValueError, match="reward 'limited_rewards.NotCallable' is not callable"):
        TimeLimitedReward("limited_rewards.NotCallable")
    with pytest.raises(ValueError, match="timeout"):
        TimeLimitedReward("limited_rewards.length_reward", timeout=0)
    with pytest.raises(ValueError, match="chunk_size"):
        TimeLimitedReward("limited_rewards.length_reward", chunk_size=0)
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        TimeLimitedReward("limited_rewards.length_reward")(["a", "b"], ["1"])


def test_a_copy_starts_its_own_worker():
    reward = TimeLimitedReward(limited_rewards.length_reward, timeout=30)  # a picklable callable also works
    clone = copy.deepcopy(reward)
    try:
        assert clone(COMPLETIONS, ANSWERS) == reward(COMPLETIONS, ANSWERS)
        assert clone._workers[0].proc.pid != reward._workers[0].proc.pid
    finally:
        reward.close()
        clone.close()
