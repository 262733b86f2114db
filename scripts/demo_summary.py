"""What the demo's runs show, as a table: validation accuracy at the first and last evaluation, token entropy over
the first and last ten rollout batches, and PAR's lambda at the end.

    python scripts/demo_summary.py runs/demo/grpo runs/demo/par
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlvr_lightning.plotting import read_metrics  # noqa: E402

WINDOW = 10  # rollout batches averaged at each end


def summarize(run: str) -> dict[str, float]:
    """The demo's numbers for one run folder (NaN where the run did not log the metric)."""
    series = read_metrics(run)
    val = next((k for k in sorted(series) if k.startswith("val/") and k.endswith("/avg@4")), None)
    entropy = [v for _, v in series.get("train/entropy", [])]
    lam = series.get("train/lambda", [])
    nan = float("nan")
    return {
        "val_first": series[val][0][1] if val else nan,
        "val_last": series[val][-1][1] if val else nan,
        "evals": len(series[val]) if val else 0,
        "entropy_first": statistics.fmean(entropy[:WINDOW]) if entropy else nan,
        "entropy_last": statistics.fmean(entropy[-WINDOW:]) if entropy else nan,
        "lambda_last": lam[-1][1] if lam else nan,
    }


def main(runs: list[str]) -> None:
    print("| run | val Avg@4 first -> last eval | token entropy first -> last 10 batches | lambda at the end |")
    print("|---|---|---|---|")
    for run in runs:
        s = summarize(run)
        print(f"| {Path(run).name} | {s['val_first']:.3f} -> {s['val_last']:.3f} ({s['evals']} evals) | "
              f"{s['entropy_first']:.3f} -> {s['entropy_last']:.3f} | {s['lambda_last']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
