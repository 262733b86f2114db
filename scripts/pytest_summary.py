"""Read pytest's closing summary line from a log and say whether the run counts as "the tests ran".

    python scripts/pytest_summary.py LOG [--label "vLLM tests"]

Prints ``<label>: 12 passed, 0 failed, 0 errors, 0 skipped`` and exits 0 when at least one test passed and none
failed, errored or was skipped; otherwise prints why and exits 1. ``.ci/run`` (through ``scripts/ci_vllm.sh``) uses
it so that a green CI shows the vLLM tests ran: they skip as a whole when vLLM cannot be imported, which pytest
alone reports as success.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")
CLOSING = re.compile(r"\b(passed|failed|errors?|skipped|no tests ran)\b.* in [\d.]+s")


def summary_counts(log: str) -> dict[str, int] | None:
    """The counts of pytest's last closing line in ``log`` (``passed``, ``failed``, ``errors``, ``skipped``, ...),
    or None when the log holds no such line (pytest did not get to the end)."""
    lines = [line for line in log.splitlines() if CLOSING.search(line)]
    if not lines:
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for n, kind in COUNT.findall(lines[-1]):
        key = {"error": "errors", "warning": "warnings"}.get(kind, kind)
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def verdict(counts: dict[str, int] | None) -> tuple[bool, str]:
    """Whether the tests ran (some passed; none failed, errored or skipped), and the line to print."""
    if counts is None:
        return False, "no pytest summary line found: the tests did not run to the end"
    shown = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped"))
    if counts["failed"] or counts["errors"]:
        return False, f"{shown}: some failed"
    if counts["skipped"]:
        return False, f"{shown}: skipped tests did not run (is the package they need importable?)"
    if not counts["passed"]:
        return False, f"{shown}: no test ran"
    return True, shown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", help="a file holding pytest's output")
    p.add_argument("--label", default="tests", help="what the tests are, printed first")
    args = p.parse_args(argv)
    ok, line = verdict(summary_counts(Path(args.log).read_text(errors="replace")))
    print(f"{args.label}: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
