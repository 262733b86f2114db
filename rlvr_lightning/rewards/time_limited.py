"""``TimeLimitedReward``: any reward in a worker process with a wall-clock limit per chunk of completions."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from rlvr_lightning.rewards.resolve import accepts_keyword, import_reward, resolve_reward, reward_name
from rlvr_lightning.rewards.workers import Worker, WorkerOwner, serve

__all__ = ["TimeLimitedReward"]

_DIED = object()  # the answer of a job whose worker died


def _reward_worker_loop(conn: Connection, spec: Any) -> None:  # runs in the child process
    """Serve ``(completions, answers, kwargs)`` requests with the reward ``spec`` (an import path or a callable)."""
    try:
        fn = resolve_reward(spec)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return

    def score(msg: tuple[list[str], list[str], dict[str, Any]]) -> tuple[str, Any]:
        completions, answers, kwargs = msg
        try:
            return "ok", [float(v) for v in fn(completions, answers, **kwargs)]
        except Exception as err:  # noqa: BLE001 - reported to the parent
            return "error", f"{type(err).__name__}: {err}"

    serve(conn, score)


class TimeLimitedReward(WorkerOwner):
    """Any reward, run in a worker process with a wall-clock limit: a hung or runaway check cannot stall training.

    The reward is imported (or unpickled) in a child process (a fresh interpreter that never imports the caller's
    ``__main__``, see :mod:`rlvr_lightning.rewards.workers`), which then serves every call. Completions go to it in
    chunks of ``chunk_size``; a chunk that takes longer than ``timeout`` seconds scores ``failure_score`` for each
    of its completions, counts them in ``last_stats["timeouts"]`` and warns, and the worker is killed and replaced.
    An exception inside the reward is raised here as a ``RuntimeError`` naming the reward (the DataModule then
    scores the batch 0 and counts an error, or stops with ``data.strict_rewards``). ``prompts=`` is passed on only
    when the reward accepts it.

    Logged under the inner reward's name. In a config::

        data:
          rewards:
            - class_path: rlvr_lightning.rewards.TimeLimitedReward
              init_args: {reward: mypkg.rewards.unit_tests_pass, timeout: 30.0, chunk_size: 8}

    Args:
        reward: the reward, as an import path ``"pkg.module.name"`` (a class is instantiated in the worker) or a
            picklable callable defined in an importable module (not in the main script or a notebook).
        timeout: seconds a chunk may take (the worker's start-up, imports included, is not counted).
        chunk_size: completions per request to the worker (None: the whole batch in one request; 1: a limit
            per completion, at the cost of one round trip each).
        failure_score: the score of a completion whose chunk timed out.
        startup_timeout: seconds the worker may take to start and import the reward.
    """

    def __init__(
        self,
        reward: Callable[..., list[float]] | str,
        timeout: float = 60.0,
        chunk_size: int | None = None,
        failure_score: float = 0.0,
        startup_timeout: float = 120.0,
    ) -> None:
        if timeout <= 0 or startup_timeout <= 0:
            raise ValueError(f"timeout and startup_timeout must be > 0 seconds, got {timeout}, {startup_timeout}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        # imported here too, to fail early naming the path; a class is instantiated only in the worker
        inner = import_reward(reward)
        if getattr(inner, "__module__", None) in ("__main__", "__mp_main__"):
            raise ValueError(
                f"reward {reward!r} is defined in the main script (or a notebook), which its worker process does not "
                f"import: define it in an importable module and pass its import path ('mypkg.rewards.name')")
        is_class = isinstance(inner, type)
        self.__name__ = inner.__name__ if is_class else reward_name(inner)
        self._takes_prompts = accepts_keyword(inner.__call__ if is_class else inner, "prompts")
        self.reward = reward
        self.timeout = float(timeout)
        self.chunk_size = chunk_size
        self.failure_score = float(failure_score)
        self.startup_timeout = float(startup_timeout)
        self.last_stats: dict[str, int] = {}
        self._init_runtime()

    def __repr__(self) -> str:
        return (f"TimeLimitedReward(reward={self.reward!r}, timeout={self.timeout}, chunk_size={self.chunk_size}, "
                f"failure_score={self.failure_score})")

    def __call__(self, completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        """The inner reward's scores for the ``B`` completions, ``failure_score`` where a chunk timed out."""
        if len(completions) != len(answers):
            raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
        if not self._takes_prompts:
            kwargs.pop("prompts", None)
        size = self.chunk_size or max(1, len(completions))
        stats = {"timeouts": 0}
        scores: list[float] = []
        with self._lock:
            for start in range(0, len(completions), size):
                chunk = slice(start, start + size)
                part = {k: (v[chunk] if isinstance(v, list) and len(v) == len(completions) else v)
                        for k, v in kwargs.items()}
                got = self._request(list(completions[chunk]), list(answers[chunk]), part)
                if got is None:
                    stats["timeouts"] += len(completions[chunk])
                    got = [self.failure_score] * len(completions[chunk])
                scores.extend(got)
        self.last_stats = stats
        if stats["timeouts"]:
            warnings.warn(f"reward {self.__name__} overran its {self.timeout} s limit: {stats['timeouts']} "
                          f"completions scored {self.failure_score}", RuntimeWarning, stacklevel=2)
        return scores

    def _request(self, completions: list[str], answers: list[str], kwargs: dict[str, Any]) -> list[float] | None:
        """One chunk's scores from the worker; None if it overran (the worker is then replaced)."""
        [got] = self._dispatch([(completions, answers, kwargs)], timeout=self.timeout, num_workers=1, died=_DIED)
        if got is None:
            return None
        if got is _DIED:
            raise RuntimeError(f"reward {self.__name__}: its worker process died on this batch")
        status, value = got
        if status != "ok":
            raise RuntimeError(f"reward {self.__name__} raised in its worker process: {value}")
        if len(value) != len(completions):
            raise ValueError(f"reward {self.__name__} returned {len(value)} scores for {len(completions)} completions")
        return value

    def _new_worker(self) -> Worker:
        return Worker(self.startup_timeout, target=_reward_worker_loop,
                      args=(self.reward,), what=f"the worker process of reward {self.__name__}")
