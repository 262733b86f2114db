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
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import re
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["ExactMatchReward", "MathVerifyReward", "extract_last_number", "resolve_reward", "reward_name"]

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
    conn.send("ready")
    gold_cache: dict[str, list[Any]] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        gold, pred = msg
        try:
            if gold not in gold_cache:
                if len(gold_cache) > 4096:
                    gold_cache.clear()
                gold_cache[gold] = _parse_gold(gold)
            g = gold_cache[gold]
            if not g:
                verdict = _GOLD_UNPARSED
            else:
                p = parse(pred, parsing_timeout=None)  # type: ignore[arg-type]
                if not p:
                    verdict = _UNPARSED
                else:
                    verdict = _CORRECT if verify(g, p, timeout_seconds=None) else _WRONG
        except BaseException:  # noqa: BLE001 - anything the checker raises is a failed check
            verdict = _ERROR
        try:
            conn.send(verdict)
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any, startup_timeout: float) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_loop, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        # start-up (imports) is not counted against the per-completion timeout
        try:
            ok = self.conn.poll(startup_timeout) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ok = False
        if not ok:
            self.kill()
            raise RuntimeError(f"a math-verify worker process did not start within {startup_timeout} s")

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


class MathVerifyReward:
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

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._ctx: Any = None
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_workers", "_ctx", "_finalizer"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return (
            f"MathVerifyReward(correct_score={self.correct_score}, format_score={self.format_score}, "
            f"failure_score={self.failure_score}, timeout={self.timeout}, max_chars={self.max_chars}, "
            f"num_workers={self.num_workers})"
        )

    def close(self) -> None:
        """Stop the worker processes (they restart on the next call)."""
        with self._lock:
            _shutdown(self._workers)

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
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str) or "." not in spec:
        raise ValueError(f"a reward must be a callable or an import path 'package.module.name', got {spec!r}")
    module_name, _, attr = spec.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward {spec!r}: {e}") from None
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"reward {spec!r} is not callable")
    return obj


def reward_name(fn: Callable[..., Any]) -> str:
    """A short name for logging: the function's or the class's name."""
    return getattr(fn, "__name__", None) or type(fn).__name__
