"""Worker processes for rewards: start one, serve requests in it, and dispatch jobs to a pool with a time limit.

A reward that owns workers subclasses :class:`WorkerOwner`: its workers start on first use (``forkserver`` start,
falling back to ``spawn``), a worker that overruns its job's limit or dies is killed and replaced, and the workers
stop when the owner is garbage collected or :meth:`WorkerOwner.close` is called. The lock, the workers and the start
context are not pickled: a copy starts workers of its own.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["Worker", "WorkerOwner", "serve", "start_context"]


def serve(conn: Connection, handle: Callable[[Any], Any]) -> None:  # runs in the child process
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


def start_context(preload: Sequence[str] = ()) -> Any:
    """A ``forkserver`` start context (importing ``preload`` once in the server) where available, else ``spawn``."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(list(preload))
    return ctx


class Worker:
    """One child process running ``target(conn, *args)``, started and ready (its start-up is not timed per job).

    Args:
        ctx: the multiprocessing start context.
        startup_timeout: seconds the child may take to say ``"ready"`` (imports included).
        target: the child's main function; it gets its end of the pipe first.
        args: further arguments of ``target``.
        what: the worker, named in the error raised when it does not start.
    """

    def __init__(
        self, ctx: Any, startup_timeout: float, target: Callable[..., None], args: tuple = (),
        what: str = "a reward worker process",
    ) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        try:
            msg = self.conn.recv() if self.conn.poll(startup_timeout) else None
        except (EOFError, OSError):
            msg = None
        if msg != "ready":
            self.kill()
            why = f": {msg[1]}" if isinstance(msg, tuple) else f" within {startup_timeout} s"
            raise RuntimeError(f"{what} did not start{why}")

    def kill(self) -> None:
        """Stop the process now and close the pipe."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


def _shutdown(workers: list[Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    for w in workers:
        w.proc.join(timeout=1)
        w.kill()
    workers.clear()


class WorkerOwner:
    """Base of the rewards that own worker processes; subclasses define :meth:`_new_worker`."""

    _RUNTIME = ("_lock", "_workers", "_ctx", "_finalizer")

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
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

    def _new_worker(self) -> Worker:
        raise NotImplementedError

    def _replace(self, w: Worker) -> Worker:
        """Kill ``w`` and put a fresh worker in its place."""
        w.kill()
        new = self._new_worker()
        self._workers[self._workers.index(w)] = new
        return new

    def _dispatch(self, jobs: Sequence[Any], *, timeout: float, num_workers: int, died: Any) -> list[Any]:
        """Each job's answer from up to ``num_workers`` workers: None where the job overran ``timeout`` seconds
        (its worker is replaced), ``died`` where the worker died on it. Call with the lock held."""
        results: list[Any] = [None] * len(jobs)
        while len(self._workers) < min(num_workers, max(1, len(jobs))):
            self._workers.append(self._new_worker())
        idle = list(self._workers)
        busy: dict[Connection, tuple[Worker, int, float]] = {}
        nxt = 0
        while nxt < len(jobs) or busy:
            while idle and nxt < len(jobs):
                w = idle.pop()
                try:
                    w.conn.send(jobs[nxt])
                except (OSError, ValueError):  # a dead worker: replace it and retry this job
                    w = self._replace(w)
                    w.conn.send(jobs[nxt])
                busy[w.conn] = (w, nxt, time.monotonic() + timeout)
                nxt += 1
            deadline = min(d for _, _, d in busy.values())
            ready = wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
            for conn in ready:
                w, i, _ = busy.pop(conn)  # type: ignore[index]
                try:
                    results[i] = conn.recv()  # type: ignore[union-attr]
                    idle.append(w)
                except (EOFError, OSError):  # the worker died on this input
                    results[i] = died
                    idle.append(self._replace(w))
            now = time.monotonic()
            for conn in [c for c, (_, _, d) in busy.items() if d <= now]:
                w, _, _ = busy.pop(conn)
                idle.append(self._replace(w))
        return results
