"""Benchmark: one RLVR step of rlvr-lightning against TRL's ``GRPOTrainer`` on the same work, on CPU.

The work (``_bench_task.py``): a 0.6M-parameter random-init Qwen2 with a character tokenizer, 16 prompts x 8 samples
x up to 16 new tokens per step, one update per rollout batch, no KL, token-mean loss, AdamW 1e-4, fp32, an
exact-match reward. Both programs load the same model and data from ``--work``. The script alternates the two
(TRL, rlvr, TRL, rlvr, ...) ``--runs`` times; each run's figure is the median step wall time over steps
``warmup+1 .. steps`` (end to end, between the ends of consecutive steps, as TRL's own step clock counts it); the
result is the median over runs of each program, their ratio, and PASS when rlvr's step takes at most 0.8x TRL's.

TRL is not a dependency: it runs in its own virtualenv, found at ``--trl-python`` (default: ``$RLVR_TRL_PYTHON``,
else ``.venv-trl/bin/python`` in the repository). Without it the benchmark prints how to create it and exits 0.

Usage: ``python benchmarks/trl_step.py [--runs 3] [--steps 20] [--threads 2] [--work runs/bench-trl]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGET = 0.8
SETUP = ("python3 -m venv {venv} && {venv}/bin/pip install torch==2.13.0 && {venv}/bin/pip install trl==1.16.0"
         "   (the CPU build of torch first; trl brings transformers, accelerate and datasets)")

def _trl_python(arg: str | None) -> str | None:
    """TRL's interpreter if it exists and imports trl, else None."""
    py = arg or os.environ.get("RLVR_TRL_PYTHON") or str(REPO / ".venv-trl" / "bin" / "python")
    if not Path(py).exists():
        return None
    ok = subprocess.run([py, "-c", "import trl"], capture_output=True).returncode == 0
    return py if ok else None


def _walls(clock: dict, warmup: int) -> list[float]:
    ends = [clock["start"], *clock["ends"]]
    return [b - a for a, b in zip(ends[:-1], ends[1:])][warmup:]


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd``, its output into ``log``; the wall seconds. Raises with the log's tail when it fails."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n" + log.read_text()[-3000:])
    return time.perf_counter() - t0


def run_trl(py: str, work: Path, model: str, data: str, args: argparse.Namespace, i: int) -> dict:
    out = work / f"trl-{i}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    _run([py, str(BENCH / "_trl_grpo.py"), "--model-dir", model, "--data-file", data, "--out", str(out),
          "--steps", str(args.steps), "--threads", str(args.threads)], env, work / f"trl-{i}.log")
    res = json.loads(out.read_text())
    return {"step_s": statistics.median(_walls(res, args.warmup)), "gen_s": statistics.median(
        res["gen_s"][args.warmup:]), "rss_peak_mib": res["rss_peak_mib"], "versions": res["versions"]}


def run_rlvr(work: Path, model: str, data: str, args: argparse.Namespace, i: int) -> dict:
    import csv

    from _bench_task import rlvr_config

    clock, logs = work / f"rlvr-{i}.json", work / f"rlvr-{i}"
    shutil.rmtree(logs, ignore_errors=True)  # a CSV log of an earlier invocation would be read instead
    cfg = work / f"rlvr-{i}.yaml"
    cfg.write_text(rlvr_config(model, data, steps=args.steps, logs=logs, clock=clock))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(BENCH), str(REPO), os.environ.get("PYTHONPATH", "")]))
    _run([sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", str(cfg)], env, work / f"rlvr-{i}.log")
    res = json.loads(clock.read_text())
    rows = list(csv.DictReader(open(next(logs.rglob("metrics.csv")))))[args.warmup:]
    med = {k: statistics.median(float(r[k]) for r in rows) for k in ("time/rollout", "time/old_logprobs",
                                                                      "time/update")}
    return {"step_s": statistics.median(_walls(res, args.warmup)), "gen_s": med["time/rollout"],
            "old_logprobs_s": med["time/old_logprobs"], "update_s": med["time/update"],
            "rss_peak_mib": res["rss_peak_mib"]}


def main() -> int:
    sys.path.insert(0, str(BENCH))
    from _bench_task import prepare, step_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_args(p, steps=20, threads=2, work=str(REPO / "runs" / "bench-trl"))
    p.add_argument("--trl-python", default=None, help="the python of TRL's virtualenv")
    p.add_argument("--json-out", default=None, help="also write the results here")
    args = p.parse_args()
    py = _trl_python(args.trl_python)
    if py is None:
        venv = str(Path(args.trl_python).parent.parent) if args.trl_python else ".venv-trl"
        print(f"SKIPPED: no TRL virtualenv (looked for {args.trl_python or '$RLVR_TRL_PYTHON or .venv-trl'}); "
              f"create it with:\n  {SETUP.format(venv=venv)}")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, data = prepare(work)
    trl, rlvr = [], []
    for i in range(args.runs):
        trl.append(run_trl(py, work, model, data, args, i))
        rlvr.append(run_rlvr(work, model, data, args, i))
        print(f"run {i + 1}/{args.runs}: TRL {trl[-1]['step_s']:.4f} s/step, rlvr {rlvr[-1]['step_s']:.4f} s/step",
              flush=True)
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "versions"}
           for name, runs in (("trl", trl), ("rlvr", rlvr))}
    ratio = med["rlvr"]["step_s"] / med["trl"]["step_s"]
    print(f"\n{'':10s} {'step (median)':>14s} {'generation':>11s} {'peak RSS':>10s}")
    for name in ("trl", "rlvr"):
        m = med[name]
        print(f"{name:10s} {m['step_s']:13.4f}s {m['gen_s']:10.4f}s {m['rss_peak_mib']:8.0f}MiB")
    r = med["rlvr"]
    print(f"rlvr split: old log-probs {r['old_logprobs_s']:.4f}s, update {r['update_s']:.4f}s")
    print(f"step time ratio rlvr / TRL = {ratio:.3f} (target <= {TARGET}): {'PASS' if ratio <= TARGET else 'FAIL'}")
    result = {"runs": {"trl": trl, "rlvr": rlvr}, "median": med, "ratio": ratio, "target": TARGET,
              "threads": args.threads, "steps": args.steps, "warmup": args.warmup}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
