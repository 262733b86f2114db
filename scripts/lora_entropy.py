"""Entropy under LoRA vs full fine-tuning on the study task (configs/study/grpo.yaml), the numbers of docs/lora.md.

    python scripts/lora_entropy.py                 # runs what is missing under runs/lora-study, prints the table
    python scripts/lora_entropy.py --steps 100 --seeds 0 1

Each condition is ``rlvr fit --config configs/study/grpo.yaml --seed_everything S --trainer.max_steps 2*steps`` plus
its options (below), one run at a time with OMP_NUM_THREADS=1; a run whose metrics.csv has every rollout step is not
run again. The table: trainable parameters, entropy and accuracy over the first and last 10 rollout batches, and the
entropy when accuracy (mean of 10 batches) first reaches 0.90 and 0.95: entropy at matched accuracy.
Needs the study model: ``make study-model``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from study_summary import mean, read  # noqa: E402

LORA = ["--model.lora.rank", "8", "--model.lora.alpha", "16"]
CONDITIONS = {
    "full": [],
    "lora_r8_lr1e-4": LORA,
    "lora_r8_lr3e-4": [*LORA, "--model.optimizer.init_args.lr", "3.0e-4"],
    "lora_r8_lr1e-3": [*LORA, "--model.optimizer.init_args.lr", "1.0e-3"],
}
WINDOW = 10


def run(condition: str, seed: int, steps: int, runs: Path) -> Path:
    out = runs / condition / f"s{seed}"
    if out.exists() and any(out.rglob("metrics.csv")) and len(read(out)) >= steps:
        return out
    cmd = [sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", "configs/study/grpo.yaml",
           "--seed_everything", str(seed), "--trainer.max_steps", str(2 * steps),
           "--trainer.logger.init_args.save_dir", str(runs / condition), "--trainer.logger.init_args.name",
           f"s{seed}", "--trainer.logger.init_args.version", "0", *CONDITIONS[condition]]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def entropy_at_accuracy(rows: list[dict[str, float]], level: float) -> str:
    """Entropy (mean of WINDOW batches) where the accuracy over the same batches first reaches ``level``."""
    for end in range(WINDOW, len(rows) + 1):
        window = rows[end - WINDOW:end]
        if mean([r["train/accuracy"] for r in window]) >= level:
            return f"{mean([r['train/entropy'] for r in window]):.2f} (batch {end})"
    return "not reached"


def row(condition: str, run_dir: Path) -> str:
    rows = read(run_dir)
    H, acc = [r["train/entropy"] for r in rows], [r["train/accuracy"] for r in rows]
    share = rows[-1]["model/trainable_params"] / rows[-1]["model/total_params"]
    return (f"| {condition} | {run_dir.name} | {share:.1%} | {mean(H[:WINDOW]):.2f} -> {mean(H[-WINDOW:]):.2f} | "
            f"{mean(acc[:WINDOW]):.2f} -> {mean(acc[-WINDOW:]):.2f} | {entropy_at_accuracy(rows, 0.90)} | "
            f"{entropy_at_accuracy(rows, 0.95)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="rollout batches per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "lora-study")
    args = p.parse_args()
    lines = ["| condition | seed | trainable | entropy first -> last 10 | accuracy first -> last 10 | "
             "entropy at acc 0.90 | entropy at acc 0.95 |", "|---|---|---|---|---|---|---|"]
    for condition in args.conditions:
        for seed in args.seeds:
            lines.append(row(condition, run(condition, seed, args.steps, args.runs)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
