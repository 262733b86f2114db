"""One line per run of the study: start and end (mean of the first / last 20 rollout batches) of entropy, accuracy
and distinct correct answers per group, and the entropy probe's averages.

    python scripts/study_summary.py runs/study/grpo/version_0 [RUN ...]
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


def summarize(run: Path, window: int = 20) -> dict[str, float]:
    rows = read(run)
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


def main() -> None:
    for arg in sys.argv[1:]:
        s = summarize(Path(arg))
        print(f"{arg}: H {s['H0']:.3f}->{s['H']:.3f} acc {s['acc0']:.3f}->{s['acc']:.3f} "
              f"dc {s['dc0']:.2f}->{s['dc']:.2f} | drive pos {s['dpos_early']:+.4f}/{s['dpos_late']:+.4f} "
              f"neg {s['dneg_early']:+.4f}/{s['dneg_late']:+.4f} | meas {s['meas_early']:+.5f}/{s['meas_late']:+.5f} "
              f"pred {s['pred_early']:+.5f}/{s['pred_late']:+.5f} r {s.get('corr_meas_pred', float('nan')):.2f} "
              f"| covp {s['covp0']:+.3f} covn {s['covn0']:+.3f}")


if __name__ == "__main__":
    main()
