"""One line per run of the study: start and end (mean of the first / last 20 rollout batches) of entropy, accuracy
and distinct correct answers per group, and the entropy probe's averages.

    python scripts/study_summary.py runs/study/grpo/s0 [RUN ...]
    python scripts/study_summary.py --markdown [--at 100] runs/study/*/s*
        # a table; adds each run's eval.json (the end of the run) unless --at cuts the run short
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path


def read(run: Path) -> list[dict[str, float]]:
    rows = []
    with open(next(run.rglob("metrics.csv"))) as f:
        for r in csv.DictReader(f):
            rows.append({k: float(v) for k, v in r.items() if v not in ("", None)})
    by_step: dict[float, dict[str, float]] = {}
    for r in rows:
        if "rollout_step" in r:
            by_step.setdefault(r["rollout_step"], {}).update(r)
    return [by_step[k] for k in sorted(by_step)]


def mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(run: Path, window: int = 20, at: float | None = None) -> dict[str, float]:
    rows = [r for r in read(run) if at is None or r["rollout_step"] <= at]
    out: dict[str, float] = {"steps": len(rows)}
    for key, name in (("train/entropy", "H"), ("train/accuracy", "acc"), ("train/distinct_correct", "dc"),
                      ("train/cov_pos", "covp"), ("train/cov_neg", "covn")):
        vals = [r[key] for r in rows if key in r]
        out[name + "0"], out[name] = mean(vals[:window]), mean(vals[-window:])
    probes = [r for r in rows if "train/entropy_drive_pos" in r]
    half = len(probes) // 2
    for key, name in (("train/entropy_drive_pos", "dpos"), ("train/entropy_drive_neg", "dneg"),
                      ("train/entropy_change_measured", "meas"), ("train/entropy_change_predicted", "pred")):
        out[name + "_early"] = mean([r[key] for r in probes[:half]])
        out[name + "_late"] = mean([r[key] for r in probes[half:]])
    m = [r["train/entropy_change_measured"] for r in probes]
    p = [r["train/entropy_change_predicted"] for r in probes]
    if len(m) > 2:
        mm, mp = mean(m), mean(p)
        cov = sum((a - mm) * (b - mp) for a, b in zip(m, p))
        den = math.sqrt(sum((a - mm) ** 2 for a in m) * sum((b - mp) ** 2 for b in p)) or float("nan")
        out["corr_meas_pred"] = cov / den
    return out


def markdown(runs: list[str], at: float | None = None) -> str:
    """A table row per run: condition, seed, training-rollout figures, the final evaluation, probe means."""
    import json

    head = ("| condition | seed | entropy start -> end | acc start -> end | distinct/8 start -> end | eval acc | "
            "eval distinct/16 | eval H(a1), H(a2) | eval borrow share | drive_pos | drive_neg | measured | "
            "predicted | r |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for arg in runs:
        run = Path(arg)
        s = summarize(run, at=at)
        ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
        if at is not None and len(read(run)) > at + 1:  # the evaluation is of the end of a longer run
            ev = {}
        pos = ev.get("entropy_by_position", [float("nan")] * 2)
        drive = lambda k: (s[k + "_early"] + s[k + "_late"]) / 2  # noqa: E731
        lines.append(
            f"| {run.parent.name} | {run.name} | {s['H0']:.2f} -> {s['H']:.2f} | {s['acc0']:.2f} -> {s['acc']:.2f} | "
            f"{s['dc0']:.2f} -> {s['dc']:.2f} | {ev.get('sampled_acc', float('nan')):.3f} | "
            f"{ev.get('distinct_correct', float('nan')):.2f} | {pos[0]:.2f}, {pos[1]:.2f} | "
            f"{ev.get('borrow_share', float('nan')):.3f} | {drive('dpos'):+.4f} | "
            f"{drive('dneg'):+.4f} | {drive('meas'):+.5f} | {drive('pred'):+.5f} | "
            f"{s.get('corr_meas_pred', float('nan')):.2f} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--markdown"]:
        args = sys.argv[2:]
        at = None
        if args[:1] == ["--at"]:
            at, args = float(args[1]), args[2:]
        print(markdown(args, at))
        return
    for arg in sys.argv[1:]:
        s = summarize(Path(arg))
        print(f"{arg}: H {s['H0']:.3f}->{s['H']:.3f} acc {s['acc0']:.3f}->{s['acc']:.3f} "
              f"dc {s['dc0']:.2f}->{s['dc']:.2f} | drive pos {s['dpos_early']:+.4f}/{s['dpos_late']:+.4f} "
              f"neg {s['dneg_early']:+.4f}/{s['dneg_late']:+.4f} | meas {s['meas_early']:+.5f}/{s['meas_late']:+.5f} "
              f"pred {s['pred_early']:+.5f}/{s['pred_late']:+.5f} r {s.get('corr_meas_pred', float('nan')):.2f} "
              f"| covp {s['covp0']:+.3f} covn {s['covn0']:+.3f}")


if __name__ == "__main__":
    main()
