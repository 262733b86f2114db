"""Reward functions: plain callables ``(completions, answers, **kw) -> list[float]``.

:class:`MathVerifyReward` checks a completion's final answer against the reference with ``math_verify``. It is safe
from any thread: math-verify's own ``signal.alarm`` timeouts are switched off (they only work on the main thread)
and verification runs instead in a small persistent pool of worker processes (``forkserver`` start, falling back to
``spawn``), with a wall-clock limit per completion; a worker that overruns is killed and replaced. Model text is
never evaluated, only parsed. Completions longer than ``max_chars`` are cut to their last ``max_chars`` characters
(the final answer is at the end); NUL bytes and invalid Unicode are replaced first.

Each call leaves counters in ``last_stats`` (reset per call): ``timeouts``, ``unparsed`` (no answer found in the
completion), ``gold_unparsed`` (the reference answer could not be parsed), ``errors`` (the checker failed),
``clipped`` (completions cut to ``max_chars``).

:class:`TimeLimitedReward` gives any reward of one's own the same protection: it runs in a worker process with a
wall-clock limit per chunk of completions, and a chunk that overruns scores ``failure_score`` and counts in
``last_stats["timeouts"]``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import multiprocessing as mp
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = [
    "ExactMatchReward",
    "MathVerifyReward",
    "TimeLimitedReward",
    "extract_last_number",
    "resolve_reward",
    "reward_name",
]

# worker verdicts
_CORRECT, _WRONG, _UNPARSED, _GOLD_UNPARSED, _ERROR = range(5)


def _parse_gold(gold: str) -> list[Any]:
    from math_verify import parse

    if "\\boxed" not in gold and "$" not in gold:
        parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)  # type: ignore[arg-type]
        if parsed:
            return parsed
    return parse(gold, parsing_timeout=None)  # type: ignore[arg-type]


def _worker_loop(conn: Connection) -> None:  # runs in the child process
    logging.disable(logging.CRITICAL)  # math-verify logs every parse failure
    from math_verify import parse, verify

    try:  # warm up the lazily loaded parsers before reporting ready
        verify(_parse_gold("1"), parse("\\boxed{1}", parsing_timeout=None), timeout_seconds=None)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        pass
    gold_cache: dict[str, list[Any]] = {}

    def check(msg: tuple[str, str]) -> int:
        gold, pred = msg
        try:
            if gold not in gold_cache:
                if len(gold_cache) > 4096:
                    gold_cache.clear()
                gold_cache[gold] = _parse_gold(gold)
            g = gold_cache[gold]
            if not g:
                return _GOLD_UNPARSED
            p = parse(pred, parsing_timeout=None)  # type: ignore[arg-type]
            if not p:
                return _UNPARSED
            return _CORRECT if verify(g, p, timeout_seconds=None) else _WRONG
        except BaseException:  # noqa: BLE001 - anything the checker raises is a failed check
            return _ERROR

    _serve(conn, check)


def _serve(conn: Connection, handle: Callable[[Any], Any]) -> None:  # runs in the child process
    """Say ``"ready"``, then answer every request with ``handle(request)`` until ``None`` or a closed pipe."""
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send(handle(msg))
        except (EOFError, OSError):
            return


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

    _serve(conn, score)


class _Worker:
    def __init__(
        self, ctx: Any, startup_timeout: float, target: Callable[..., None] = _worker_loop, args: tuple = (),
        what: str = "a math-verify worker process",
    ) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        # start-up (imports) is not counted against the per-completion timeout
        try:
            msg = self.conn.recv() if self.conn.poll(startup_timeout) else None
        except (EOFError, OSError):
            msg = None
        if msg != "ready":
            self.kill()
            why = f": {msg[1]}" if isinstance(msg, tuple) else f" within {startup_timeout} s"
            raise RuntimeError(f"{what} did not start{why}")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    for w in workers:
        w.proc.join(timeout=1)
        w.kill()
    workers.clear()


def _clean(text: Any, max_chars: int) -> tuple[str, bool]:
    """Valid UTF-8 text with NUL bytes replaced, cut to its last ``max_chars`` characters."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text.encode("utf-8", "replace").decode("utf-8", "replace").replace("\x00", "\ufffd")
    if len(text) > max_chars:
        return text[-max_chars:], True
    return text, False


class _WorkerOwner:
    """Base of the rewards that own worker processes: a lock, the workers (stopped when the reward is garbage
    collected) and the start context, none of which is pickled (a copy starts workers of its own)."""

    _RUNTIME = ("_lock", "_workers", "_ctx", "_finalizer")

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._ctx: Any = None
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def close(self) -> None:
        """Stop the worker processes (they restart on the next call)."""
        with self._lock:
            _shutdown(self._workers)


class MathVerifyReward(_WorkerOwner):
    """``correct_score`` when the completion's answer equals the reference (by math-verify), else lower scores.

    The reference is parsed as LaTeX (wrapped in ``\\boxed{}`` when it has no ``$``/``\\boxed``), the completion
    with math-verify's default LaTeX (``\\boxed`` first) and plain-expression extraction.

    Args:
        correct_score: score of a correct answer.
        format_score: score of an answer that was found but is wrong.
        failure_score: score when no answer is found, the check times out or fails.
        timeout: seconds allowed per completion (parse + verify) before its worker is killed.
        max_chars: longer completions keep only their last ``max_chars`` characters.
        num_workers: worker processes checking completions in parallel.
    """

    def __init__(
        self,
        correct_score: float = 1.0,
        format_score: float = 0.0,
        failure_score: float = 0.0,
        timeout: float = 5.0,
        max_chars: int = 10_000,
        num_workers: int = 1,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_chars < 1 or num_workers < 1:
            raise ValueError(f"max_chars and num_workers must be >= 1, got {max_chars}, {num_workers}")
        self.correct_score = correct_score
        self.format_score = format_score
        self.failure_score = failure_score
        self.timeout = timeout
        self.max_chars = max_chars
        self.num_workers = num_workers
        self.last_stats: dict[str, int] = {}
        self._init_runtime()

    def __repr__(self) -> str:
        return (
            f"MathVerifyReward(correct_score={self.correct_score}, format_score={self.format_score}, "
            f"failure_score={self.failure_score}, timeout={self.timeout}, max_chars={self.max_chars}, "
            f"num_workers={self.num_workers})"
        )

    def _new_worker(self) -> _Worker:
        if self._ctx is None:
            if "forkserver" in mp.get_all_start_methods():
                self._ctx = mp.get_context("forkserver")
                # a fresh forkserver imports the checker once; restarts after a timeout then fork in milliseconds
                self._ctx.set_forkserver_preload(["rlvr_lightning.data.rewards", "math_verify"])
            else:
                self._ctx = mp.get_context("spawn")
        return _Worker(self._ctx, startup_timeout=120.0)

    def __call__(self, completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        """Score each completion against the answer at the same index (both lists of length B)."""
        if len(completions) != len(answers):
            raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
        stats = {"timeouts": 0, "unparsed": 0, "gold_unparsed": 0, "errors": 0, "clipped": 0}
        jobs = []
        for c, a in zip(completions, answers):
            text, clipped = _clean(c, self.max_chars)
            gold, _ = _clean(a, self.max_chars)
            stats["clipped"] += int(clipped)
            jobs.append((gold, text))
        with self._lock:
            verdicts = self._run(jobs, stats)
        scores = []
        for v in verdicts:
            if v == _CORRECT:
                scores.append(float(self.correct_score))
            elif v == _WRONG:
                scores.append(float(self.format_score))
            else:
                key = {_UNPARSED: "unparsed", _GOLD_UNPARSED: "gold_unparsed", _ERROR: "errors"}.get(v)
                if key is not None:
                    stats[key] += 1
                scores.append(float(self.failure_score))
        self.last_stats = stats
        return scores

    def _run(self, jobs: list[tuple[str, str]], stats: dict[str, int]) -> list[int | None]:
        """Verdict per job (None: timed out), dispatching to up to ``num_workers`` processes."""
        verdicts: list[int | None] = [None] * len(jobs)
        while len(self._workers) < min(self.num_workers, max(1, len(jobs))):
            self._workers.append(self._new_worker())
        idle = list(self._workers)
        busy: dict[Connection, tuple[_Worker, int, float]] = {}
        nxt = 0
        while nxt < len(jobs) or busy:
            while idle and nxt < len(jobs):
                w = idle.pop()
                try:
                    w.conn.send(jobs[nxt])
                except (OSError, ValueError):  # a dead worker: replace it and retry this job
                    w = self._replace(w)
                    w.conn.send(jobs[nxt])
                busy[w.conn] = (w, nxt, time.monotonic() + self.timeout)
                nxt += 1
            deadline = min(d for _, _, d in busy.values())
            ready = wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
            for conn in ready:
                w, i, _ = busy.pop(conn)  # type: ignore[index]
                try:
                    verdicts[i] = conn.recv()  # type: ignore[union-attr]
                    idle.append(w)
                except (EOFError, OSError):  # the worker died on this input
                    verdicts[i] = _ERROR
                    idle.append(self._replace(w))
            now = time.monotonic()
            for conn in [c for c, (_, _, d) in busy.items() if d <= now]:
                w, i, _ = busy.pop(conn)
                stats["timeouts"] += 1
                idle.append(self._replace(w))
        return verdicts

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        new = self._new_worker()
        self._workers[self._workers.index(w)] = new
        return new


class TimeLimitedReward(_WorkerOwner):
    """Any reward, run in a worker process with a wall-clock limit: a hung or runaway check cannot stall training.

    The reward is imported (or unpickled) in a child process (``forkserver`` start, else ``spawn``), which then
    serves every call. Completions go to it in chunks of ``chunk_size``; a chunk that takes longer than
    ``timeout`` seconds scores ``failure_score`` for each of its completions, counts them in
    ``last_stats["timeouts"]`` and warns, and the worker is killed and replaced. An exception inside the reward
    is raised here as a ``RuntimeError`` naming the reward (the DataModule then scores the batch 0 and counts an
    error, or stops with ``data.strict_rewards``). ``prompts=`` is passed on only when the reward accepts it.

    Logged under the inner reward's name. In a config::

        data:
          rewards:
            - class_path: rlvr_lightning.rewards.TimeLimitedReward
              init_args: {reward: mypkg.rewards.unit_tests_pass, timeout: 30.0, chunk_size: 8}

    Args:
        reward: the reward, as an import path ``"pkg.module.name"`` (a class is instantiated in the worker) or a
            picklable callable (e.g. a module-level function).
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
        inner = _import_reward(reward)
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
        if not self._workers:
            self._workers.append(self._new_worker())
        w = self._workers[0]
        try:
            w.conn.send((completions, answers, kwargs))
        except (OSError, ValueError):  # the worker died since the last call: start another, once
            w = self._restart(w)
            w.conn.send((completions, answers, kwargs))
        if not w.conn.poll(self.timeout):
            self._restart(w)
            return None
        try:
            status, value = w.conn.recv()
        except (EOFError, OSError):
            self._restart(w)
            raise RuntimeError(f"reward {self.__name__}: its worker process died on this batch") from None
        if status != "ok":
            raise RuntimeError(f"reward {self.__name__} raised in its worker process: {value}")
        if len(value) != len(completions):
            raise ValueError(f"reward {self.__name__} returned {len(value)} scores for {len(completions)} completions")
        return value

    def _new_worker(self) -> _Worker:
        if self._ctx is None:
            self._ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        return _Worker(self._ctx, self.startup_timeout, target=_reward_worker_loop,
                       args=(self.reward,), what=f"the worker process of reward {self.__name__}")

    def _restart(self, w: _Worker) -> _Worker:
        w.kill()
        new = self._new_worker()
        self._workers[0] = new
        return new


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == name for p in params)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``"-12"``, ``"3.5"``), with thousands separators removed, or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


class ExactMatchReward:
    """1.0 when the extracted answer equals the reference string (both stripped), else 0.0.

    Args:
        extract: ``"last_number"`` compares the completion's last number, ``"full"`` the whole completion.
    """

    def __init__(self, extract: str = "last_number") -> None:
        if extract not in ("last_number", "full"):
            raise ValueError(f"extract must be 'last_number' or 'full', got {extract!r}")
        self.extract = extract

    def __call__(self, completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        """Score each completion against the answer at the same index."""
        out = []
        for c, a in zip(completions, answers, strict=True):
            got = extract_last_number(c) if self.extract == "last_number" else c.strip()
            out.append(1.0 if got is not None and got == str(a).strip() else 0.0)
        return out


def resolve_reward(spec: Callable[..., list[float]] | str) -> Callable[..., list[float]]:
    """A reward callable from itself or from an import path ``"pkg.module.name"`` (a class is instantiated)."""
    obj = _import_reward(spec)
    return obj() if isinstance(obj, type) else obj


def _import_reward(spec: Callable[..., list[float]] | str) -> Any:
    """What ``spec`` names (a class is returned as it is), checked to be callable; errors name the path."""
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str) or "." not in spec:
        raise ValueError(f"a reward must be a callable or an import path 'package.module.name', got {spec!r}")
    module_name, _, attr = spec.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward {spec!r}: {e}") from None
    if not callable(obj) or (isinstance(obj, type) and "__call__" not in dir(obj)):  # instances not callable
        raise ValueError(f"reward {spec!r} is not callable")
    return obj


def reward_name(fn: Callable[..., Any]) -> str:
    """A short name for logging: the function's or the class's name."""
    return getattr(fn, "__name__", None) or type(fn).__name__
