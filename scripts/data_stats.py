"""How long a data epoch is for a config: rows, duplicate prompts, distinct prompts, steps per epoch, epochs per run.

Reads the training source a config names (or the one given here), de-duplicated as ``RolloutDataModule`` does it,
without a tokenizer or a model (prompts later dropped for their length are not counted)::

    python scripts/data_stats.py --config configs/par_epoch.yaml
    python scripts/data_stats.py --config configs/par_epoch.yaml --train_files /data/dapo-math-17k.parquet

Epoch-based schedules (``EpochPAR``) count data epochs of ``distinct prompts // prompts_per_step`` rollout batches;
the run's epochs are ``max_steps / (ppo_epochs * num_mini_batches)`` rollout batches over that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlvr_lightning.batching import total_epochs
from rlvr_lightning.data.dedup import load_unique_records
from rlvr_lightning.data.prompts import PromptSource


def stats(config: dict, train_files: str | None = None, train_dataset: str | None = None) -> dict[str, int]:
    """The figures for a parsed config (its ``data``, ``model`` and ``trainer`` sections)."""
    data, model, trainer = config.get("data", {}), config.get("model", {}), config.get("trainer", {})
    if train_files or train_dataset:  # as on the CLI: a source given here replaces the config's
        data = {**data, "train_files": train_files, "train_dataset": train_dataset}
    source = PromptSource(data.get("train_files"), data.get("train_dataset"), data.get("train_split", "train"),
                          data.get("prompt_field", "prompt"), data.get("answer_field", "answer"))
    records, report = load_unique_records(source, keep_duplicates=bool(data.get("keep_duplicates", False)))
    P = int(data.get("prompts_per_step", 8))
    updates = int(model.get("ppo_epochs", 1)) * int(model.get("num_mini_batches", 1))
    steps = len(records) // P
    return {"rows": report.rows, "duplicates_dropped": report.dropped, "distinct_prompts": len(records),
            "prompts_per_step": P, "steps_per_epoch": steps,
            "epochs_in_run": total_epochs(trainer.get("max_epochs"), int(trainer.get("max_steps", -1)), steps,
                                          updates)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--train_files", nargs="+", default=None, help="replaces the config's training source")
    p.add_argument("--train_dataset", default=None, help="replaces the config's training source")
    args = p.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    for key, value in stats(config, args.train_files, args.train_dataset).items():
        print(f"{key}: {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
