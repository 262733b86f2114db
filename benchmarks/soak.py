"""Soak test: the smoke config trained for a given time; resident-memory growth after warm-up.

    python benchmarks/soak.py --minutes 30 [--warmup-minutes 3] [--max-growth 0.05] [--out runs/soak]

Runs ``rlvr fit --config configs/smoke.yaml`` in this process for ``--minutes`` (Lightning's ``max_time``; no step
limit) with the default math-verify reward (so its worker processes are part of the soak), a checkpoint every step
and a short validation every 25 rollout steps. A thread samples the resident memory (RSS) of this process and of
its child processes every second. The baseline is the median RSS over the first tenth of the time after warm-up,
the end value the median over the last tenth; the report gives both, their ratio (the growth) and the least-squares
slope after warm-up in MiB per hour, for this process and for its children, and writes every sample to
``OUT/rss.csv``. The exit status is 1 when the total growth exceeds ``--max-growth``. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_kib(pid: int) -> int:
    """Resident size of process ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, recursively."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids = [int(c) for c in fh.read().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


class Sampler(threading.Thread):
    """Samples ``(seconds, own RSS KiB, children's RSS KiB, number of children)`` every ``every`` seconds."""

    def __init__(self, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        pid = os.getpid()
        while not self.stop.is_set():
            kids = children(pid)
            self.samples.append((time.monotonic() - self.start_time, rss_kib(pid),
                                 sum(rss_kib(k) for k in kids), len(kids)))
            self.stop.wait(self.every)


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per hour."""
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0


def growth(samples: list[tuple], warmup_s: float, column: int) -> tuple[float, float, float]:
    """``(baseline MiB, end MiB, slope MiB/hour)`` of one RSS column after warm-up."""
    after = [s for s in samples if s[0] >= warmup_s]
    tenth = max(1, len(after) // 10)
    base = statistics.median(s[column] for s in after[:tenth]) / 1024
    end = statistics.median(s[column] for s in after[-tenth:]) / 1024
    return base, end, slope_per_hour([s[0] for s in after], [s[column] / 1024 for s in after])


def fit_args(seconds: int, out: Path) -> list[str]:
    """The ``rlvr fit`` arguments of the soak run."""
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return ["fit", "--config", str(REPO / "configs" / "smoke.yaml"), "--trainer.max_steps", "-1",
            "--trainer.max_time", f"{d:02d}:{h:02d}:{m:02d}:{s:02d}", "--trainer.default_root_dir", str(out),
            "--trainer.val_check_interval", "25", "--trainer.check_val_every_n_epoch", "null",
            "--trainer.limit_val_batches", "2"]


def report(samples: list[tuple], warmup_s: float, steps: int, seconds: float) -> tuple[str, float]:
    """The printed report and the total growth ratio."""
    lines = [f"soak: {seconds:.0f} s sampled, start-up included (warm-up {warmup_s:.0f} s), {steps} rollout steps, "
             f"{len(samples)} RSS samples, {max(s[3] for s in samples)} child processes at most"]
    total = [(s[0], s[1] + s[2]) for s in samples]
    for name, rows, col in (("this process", samples, 1), ("child processes", samples, 2),
                            ("total", total, 1)):
        base, end, slope = growth(rows, warmup_s, col)
        ratio = end / base - 1 if base else 0.0
        lines.append(f"  {name:16s} RSS after warm-up {base:8.1f} MiB, at the end {end:8.1f} MiB: "
                     f"growth {100 * ratio:+.2f}% (slope {slope:+.1f} MiB/hour)")
    return "\n".join(lines), ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training time")
    p.add_argument("--warmup-minutes", type=float, default=None, help="left out of the growth (default: 1/5)")
    p.add_argument("--max-growth", type=float, default=0.05, help="largest accepted total RSS growth ratio")
    p.add_argument("--out", default=str(REPO / "runs" / "soak"), help="run folder (default_root_dir)")
    args = p.parse_args(argv)
    from rlvr_lightning.cli import cli_main

    seconds = max(10, int(args.minutes * 60))
    warmup = 60 * args.warmup_minutes if args.warmup_minutes is not None else seconds / 5
    out = Path(args.out)
    sampler = Sampler()
    sampler.start()
    os.chdir(REPO)  # the smoke config names assets/ relative to the repository
    cli = cli_main(fit_args(seconds, out))
    sampler.stop.set()
    sampler.join()
    text, ratio = report(sampler.samples, warmup, cli.model.rollout_step, sampler.samples[-1][0])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rss.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("seconds", "rss_kib", "children_rss_kib", "children"), *sampler.samples])
    print(text)
    print(f"total growth {100 * ratio:+.2f}% vs the limit {100 * args.max_growth:.0f}%: "
          f"{'ok' if ratio <= args.max_growth else 'TOO MUCH'}")
    return 0 if ratio <= args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
