"""Worker processes for rewards: start one, serve requests in it, and dispatch jobs to a pool with a time limit.

A worker is a fresh interpreter running ``python -m rlvr_lightning.rewards.worker_main`` (see that module), joined
to this process by a socket pair. It never imports this process's ``__main__`` module, so rewards start alike from
``rlvr fit``, from a script with or without an ``if __name__ == "__main__":`` guard, ``python -c``, ``python -``
(stdin), a thread or a notebook. This process's ``sys.path`` is handed on (as ``PYTHONPATH``), so whatever imports
here imports there. The worker's function and arguments are pickled to it: a function or class defined in the main
script or a notebook cannot be, give an import path instead. The worker's standard error is copied to this
process's, and a worker that fails to start is reported at once with its own error (the message it sent, or the
end of its standard error and its exit code). Needs a POSIX system (descriptors are passed to the child).

A reward that owns workers subclasses :class:`WorkerOwner`: its workers start on first use, a worker that overruns
its job's limit or dies is killed and replaced, and the workers stop when the owner is garbage collected or
:meth:`WorkerOwner.close` is called. The lock and the workers are not pickled: a copy starts workers of its own.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["Worker", "WorkerOwner", "serve"]

_ENTRY = "rlvr_lightning.rewards.worker_main"


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


def _child_env() -> dict[str, str]:
    """This environment with ``PYTHONPATH`` set to this process's ``sys.path`` (``""`` meaning the cwd)."""
    paths = [p or os.getcwd() for p in sys.path]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))


class _StderrCopy(threading.Thread):
    """Copies a worker's standard error to this process's ``sys.stderr``, keeping its last lines."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True, name="reward-worker-stderr")
        self.stream = stream
        self.tail: collections.deque[str] = collections.deque(maxlen=30)

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.tail.append(line.rstrip("\n"))
            try:
                sys.stderr.write(line)
            except (OSError, ValueError):  # this process's stderr is closed: keep draining the pipe
                pass
        self.stream.close()


class Worker:
    """One child process running ``target(conn, *args)``, started and ready (its start-up is not timed per job).

    Args:
        startup_timeout: seconds the child may take to say ``"ready"`` (imports included).
        target: the child's main function (importable by name); it gets its end of the pipe first.
        args: further (picklable) arguments of ``target``.
        what: the worker, named in the error raised when it does not start.

    Raises:
        RuntimeError: the child did not start; the message holds its own error.
    """

    def __init__(
        self, startup_timeout: float, target: Callable[..., None], args: tuple = (),
        what: str = "a reward worker process",
    ) -> None:
        mine, theirs = socket.socketpair()
        self.conn = Connection(mine.detach())
        fd = theirs.fileno()
        self.proc = subprocess.Popen([sys.executable, "-m", _ENTRY, str(fd)], pass_fds=(fd,), env=_child_env(),
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        self._stderr = _StderrCopy(self.proc.stderr)
        self._stderr.start()
        try:
            self.conn.send((target, args))
        except OSError:  # the child is already gone: its exit code and standard error say why
            pass
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable argument
            self.kill()
            raise RuntimeError(f"{what} did not start: cannot send it its work ({type(err).__name__}: {err})") from None
        self._wait_ready(startup_timeout, what)

    def _wait_ready(self, startup_timeout: float, what: str) -> None:
        try:
            msg = self.conn.recv() if self.conn.poll(startup_timeout) else None
        except (EOFError, OSError):  # the child closed its end: it died
            msg = None
        if msg == "ready":
            return
        if isinstance(msg, tuple):
            self.kill()
            raise RuntimeError(f"{what} did not start: {msg[1]}")
        try:
            code: int | None = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        self._stderr.join(timeout=5)
        if code is None:
            raise RuntimeError(f"{what} did not start within {startup_timeout} s")
        tail = "\n".join(self._stderr.tail) or "(nothing on its standard error)"
        raise RuntimeError(f"{what} exited with code {code} as it started; its standard error ends with:\n{tail}")

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the process to end."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        """Stop the process now and close the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.join(timeout=5)
        self.conn.close()


def _shutdown(workers: list[Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    for w in workers:
        w.join(timeout=1)
        w.kill()
    workers.clear()


class WorkerOwner:
    """Base of the rewards that own worker processes; subclasses define :meth:`_new_worker`."""

    _RUNTIME = ("_lock", "_workers", "_finalizer")

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
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
