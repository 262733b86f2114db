"""math-verify in worker processes: the ``MathVerifyReward`` and the answer-equivalence classes of responses.

:class:`MathVerifyReward` checks a completion's final answer against the reference with ``math_verify``. It is safe
from any thread: math-verify's own ``signal.alarm`` timeouts are switched off (they only work on the main thread)
and verification runs instead in a small persistent pool of worker processes (fresh interpreters that never import
the caller's ``__main__``: see :mod:`rlvr_lightning.rewards.workers`), with a wall-clock limit per completion; a
worker that overruns is killed and replaced. Model text is never evaluated, only parsed. Completions longer than
``max_chars`` are cut to their last ``max_chars`` characters (the final answer is at the end); NUL bytes and invalid
Unicode are replaced first.

Each call leaves counters in ``last_stats`` (reset per call): ``timeouts``, ``unparsed`` (no answer found in the
completion), ``gold_unparsed`` (the reference answer could not be parsed), ``errors`` (the checker failed),
``clipped`` (completions cut to ``max_chars``).

:class:`AnswerEquivalence` (and :func:`answer_classes`, through one shared instance) groups the responses to one
prompt into classes of equivalent final answers, for the diversity metrics and Maj@k, in the same kind of worker
with a time limit per group.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Literal

from rlvr_lightning.rewards.workers import Worker, WorkerOwner, serve

__all__ = ["AnswerEquivalence", "MathVerifyReward", "answer_classes", "classify_answers"]

# worker verdicts
_CORRECT, _WRONG, _UNPARSED, _GOLD_UNPARSED, _ERROR = range(5)


def _parse_gold(gold: str) -> list[Any]:
    from math_verify import parse

    if "\\boxed" not in gold and "$" not in gold:
        parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)  # type: ignore[arg-type]
        if parsed:
            return parsed
    return parse(gold, parsing_timeout=None)  # type: ignore[arg-type]


def _parse_answer(text: str, parse_kwargs: dict[str, Any]) -> list[Any] | None:
    """math-verify's parse of ``text``; ``None`` when nothing could be extracted or parsing failed."""
    from math_verify import parse

    try:
        parsed = parse(text, parsing_timeout=None, **parse_kwargs)  # type: ignore[arg-type]
    except Exception:  # a malformed response must never stop a run
        return None
    return parsed if parsed else None


def _equivalent(a: list[Any], b: list[Any]) -> bool:
    from math_verify import verify

    try:
        return bool(verify(a, b, timeout_seconds=None)) or bool(verify(b, a, timeout_seconds=None))
    except Exception:
        return False


def classify_answers(texts: Sequence[str], **parse_kwargs: Any) -> list[int]:
    """Class ids of mathematically equivalent final answers, computed in this process with no time limit.

    Each text is parsed with ``math_verify.parse`` and compared with the first member of each class found so far
    using ``math_verify.verify`` in both directions; the first match joins. A text without an extractable answer,
    or whose parsing raises, gets ``-1``; a comparison that raises counts as "not equal". The worker of
    :class:`AnswerEquivalence` runs this.

    Args:
        texts: the responses to one prompt (length G).
        **parse_kwargs: forwarded to ``math_verify.parse`` (e.g. ``extraction_config``).

    Returns:
        G class ids numbered 0, 1, ... in order of first appearance, -1 for none.
    """
    ids: list[int] = []
    reps: list[list[Any]] = []
    for text in texts:
        parsed = _parse_answer(text, parse_kwargs)
        if parsed is None:
            ids.append(-1)
            continue
        for cls, rep in enumerate(reps):
            if _equivalent(rep, parsed):
                ids.append(cls)
                break
        else:
            reps.append(parsed)
            ids.append(len(reps) - 1)
    return ids


def _worker_loop(conn: Connection) -> None:  # runs in the child process
    logging.disable(logging.CRITICAL)  # math-verify logs every parse failure
    from math_verify import parse, verify

    try:  # warm up the lazily loaded parsers before reporting ready
        verify(_parse_gold("1"), parse("\\boxed{1}", parsing_timeout=None), timeout_seconds=None)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        pass
    gold_cache: dict[str, list[Any]] = {}

    def check(gold: str, pred: str) -> int:
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

    def handle(msg: tuple[str, Any, Any]) -> Any:
        kind, a, b = msg
        return check(a, b) if kind == "verify" else classify_answers(a, **b)

    serve(conn, handle)


def _clean(text: Any, max_chars: int) -> tuple[str, bool]:
    """Valid UTF-8 text with NUL bytes replaced, cut to its last ``max_chars`` characters."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text.encode("utf-8", "replace").decode("utf-8", "replace").replace("\x00", "\ufffd")
    if len(text) > max_chars:
        return text[-max_chars:], True
    return text, False


class _MathVerifyWorkers(WorkerOwner):
    """Owner of math-verify worker processes."""

    def _new_worker(self) -> Worker:
        return Worker(startup_timeout=120.0, target=_worker_loop, what="a math-verify worker process")


class MathVerifyReward(_MathVerifyWorkers):
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
            jobs.append(("verify", gold, text))
        with self._lock:
            verdicts = self._dispatch(jobs, timeout=self.timeout, num_workers=self.num_workers, died=_ERROR)
        stats["timeouts"] = sum(v is None for v in verdicts)
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


class AnswerEquivalence(_MathVerifyWorkers):
    """Classes of equivalent final answers among the responses to one prompt, by math-verify in a worker process.

    :func:`classify_answers` runs in the worker with a limit of ``timeout`` seconds per response (a group of G
    responses may take ``G * timeout``); a group that overruns, or whose worker dies, gets class ``-1`` for every
    response (as if no answer were found) and counts in ``last_stats["timeouts"]`` / ``last_stats["errors"]``.

    Args:
        timeout: seconds allowed per response of a group.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.last_stats: dict[str, int] = {}
        self._init_runtime()

    def __repr__(self) -> str:
        return f"AnswerEquivalence(timeout={self.timeout})"

    def __call__(self, texts: Sequence[str], **parse_kwargs: Any) -> list[int]:
        """G class ids numbered 0, 1, ... in order of first appearance, -1 where no answer was found."""
        texts = list(texts)
        if not texts:
            return []
        with self._lock:
            [got] = self._dispatch([("classes", texts, parse_kwargs)], timeout=self.timeout * len(texts),
                                   num_workers=1, died=_ERROR)
        self.last_stats = {"timeouts": int(got is None), "errors": int(got is _ERROR)}
        return [-1] * len(texts) if got is None or got is _ERROR else got


_shared: AnswerEquivalence | None = None
_shared_lock = threading.Lock()


def answer_classes(
    texts: Sequence[str], *, equivalence: Literal["math_verify", "exact"] = "math_verify", **parse_kwargs: Any
) -> list[int]:
    """Group responses whose final answers are equivalent: an integer class id per response.

    With ``equivalence="math_verify"`` the classes come from :func:`classify_answers`, run by one shared
    :class:`AnswerEquivalence` (a worker process with a time limit of 5 s per response). With
    ``equivalence="exact"`` the stripped strings themselves are compared (for answers already extracted).

    Args:
        texts: responses (or extracted answers) to one prompt (length G).
        equivalence: ``"math_verify"`` or ``"exact"``.
        **parse_kwargs: forwarded to ``math_verify.parse`` (e.g. ``extraction_config``).

    Returns:
        G class ids numbered 0, 1, ... in order of first appearance, -1 where no answer was found.

    Example:
        >>> answer_classes(["7", " 7", "8", ""], equivalence="exact")
        [0, 0, 1, -1]
    """
    global _shared
    if equivalence == "exact":
        table: dict[str, int] = {}
        return [table.setdefault(t.strip(), len(table)) if t.strip() else -1 for t in texts]
    if equivalence != "math_verify":
        raise ValueError(f"equivalence must be 'math_verify' or 'exact', got {equivalence!r}")
    with _shared_lock:
        if _shared is None:
            _shared = AnswerEquivalence()
    return _shared(texts, **parse_kwargs)
