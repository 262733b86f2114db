"""Benchmark: a 2-rank FSDP2 training step on CPU (gloo) against the 1-process step of the same work.

The work of ``trl_step.py`` (``_bench_task.py``: a 0.6M-parameter Qwen2, 16 prompts x 8 samples x up to 16 new
tokens per step, one update per rollout batch), every prompt seeded on its own so that both runs draw the same
rollouts. The 2-rank run is ``rlvr fit`` with Lightning's ``ModelParallelStrategy`` (``data_parallel_size: 2``,
``fully_shard`` per transformer block) on 2 CPU processes talking through gloo; each rank generates and trains on
8 of the 16 prompts. Reported per rank: the median step wall time (steps ``warmup+1 .. steps``, end to end) and
the peak resident memory of the process; and their ratios to the 1-process run measured in the same invocation.

On a 2-core machine the two ranks share the cores the single process has to itself, and gloo moves every
all-gather and reduce-scatter through shared memory: this measures that the sharded path works and what it costs
here, not a speed-up.

Usage: ``python benchmarks/fsdp2_step.py [--steps 10] [--threads 1] [--work runs/bench-fsdp2]``
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from _bench_task import prepare, rlvr_config, run_fit  # noqa: E402


def _fit(work: Path, name: str, ranks: int, model: str, data: str, args: argparse.Namespace) -> list[dict]:
    """Run ``rlvr fit`` on ``ranks`` processes; per rank: median step seconds and peak RSS (MiB)."""
    clock, logs = work / f"{name}.json", work / name
    shutil.rmtree(logs, ignore_errors=True)  # a CSV log of an earlier invocation would be read instead
    cfg = work / f"{name}.yaml"
    cfg.write_text(rlvr_config(model, data, steps=args.steps, logs=logs, clock=clock, ranks=ranks, per_prompt=True))
    run_fit(cfg, work / f"{name}.log", args.threads)
    out = []
    for rank in range(ranks):
        res = json.loads(Path(f"{clock}.rank{rank}" if rank else clock).read_text())
        ends = [res["start"], *res["ends"]]
        walls = [b - a for a, b in zip(ends[:-1], ends[1:])][args.warmup:]
        out.append({"step_s": statistics.median(walls), "rss_peak_mib": res["rss_peak_mib"]})
    rows = list(csv.DictReader(open(next(logs.rglob("metrics.csv")))))
    out[0]["entropy"] = [float(r["train/entropy"]) for r in rows]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--work", default=str(REPO / "runs" / "bench-fsdp2"), help="model, data, logs")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, data = prepare(work)
    one = _fit(work, "one", 1, model, data, args)[0]
    two = _fit(work, "fsdp2", 2, model, data, args)
    print(f"{'run':14s} {'step (median)':>14s} {'vs 1 process':>13s} {'peak RSS':>10s} {'vs 1 process':>13s}")
    print(f"{'1 process':14s} {one['step_s']:13.4f}s {1:12.2f}x {one['rss_peak_mib']:8.0f}MiB {1:12.2f}x")
    for rank, r in enumerate(two):
        print(f"{f'FSDP2 rank {rank}':14s} {r['step_s']:13.4f}s {r['step_s'] / one['step_s']:12.2f}x "
              f"{r['rss_peak_mib']:8.0f}MiB {r['rss_peak_mib'] / one['rss_peak_mib']:12.2f}x")
    gap = max(abs(a - b) for a, b in zip(one["entropy"], two[0]["entropy"]))
    print(f"largest per-step difference of train/entropy (same rollouts, same weights), 2 ranks vs 1: {gap:.2e}")
    print(json.dumps({"one": one, "fsdp2": two, "threads": args.threads, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
