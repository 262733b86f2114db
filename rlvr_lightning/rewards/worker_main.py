"""The entry point of a reward worker process: ``python -m rlvr_lightning.rewards.worker_main FD``.

:class:`rlvr_lightning.rewards.workers.Worker` starts it with ``FD``, its end of a socket pair. The first message
is ``(target, args)``; the worker then runs ``target(conn, *args)``, which serves requests (see
:func:`rlvr_lightning.rewards.workers.serve`). Nothing of the parent's ``__main__`` module is imported, so starting
a worker works the same from any script, ``python -c``, ``python -``, a thread or a notebook. When the work cannot
be loaded here (e.g. a function defined in the parent's main script), the worker answers ``("failed", reason)``
and exits, so the parent reports that reason at once.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from rlvr_lightning.quiet import quiet_third_party


def _load_failure(err: BaseException) -> str:
    reason = f"cannot load its work in the worker process ({type(err).__name__}: {err})"
    if "__main__" in str(err) or "__mp_main__" in str(err):
        reason += ("; a function or class defined in the main script or a notebook cannot run in a worker "
                   "process: define it in an importable module and pass its import path")
    return reason


def main(argv: list[str] | None = None) -> int:
    """Run the work the parent sends on the socket whose descriptor is ``argv[0]``; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m rlvr_lightning.rewards.worker_main FD (started by rlvr_lightning.rewards.workers)",
              file=sys.stderr)
        return 2
    quiet_third_party()
    conn = Connection(int(args[0]))
    try:
        target, target_args = conn.recv()
    except EOFError:  # the parent went away before sending anything
        return 1
    except Exception as err:  # noqa: BLE001 - reported to the parent
        conn.send(("failed", _load_failure(err)))
        return 1
    target(conn, *target_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
