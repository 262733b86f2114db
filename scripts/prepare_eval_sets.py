"""Prepare the evaluation sets the configs name: ``data/<set>.jsonl`` for AIME 2024/2025, AMC23, MATH-500, Minerva.

    python scripts/prepare_eval_sets.py                                  # the five benchmarks from the hub
    python scripts/prepare_eval_sets.py --sets aime2025 --source aime2025=/copies/aime25   # a local copy
    python scripts/prepare_eval_sets.py --sets math500 --source math500=MATH-500/test.jsonl --limit 100
    python scripts/prepare_eval_sets.py --generate gsm_symbolic --size 200 --seed 0      # offline, reasoning-gym

Each set is read with the ``datasets`` library (a hub name, a ``save_to_disk`` folder, a folder of data files, or a
``.jsonl`` / ``.json`` / ``.parquet`` file) and written to ``OUT/<set>.jsonl`` in the format of
``rlvr_lightning.data.benchmarks`` (``problem`` / ``answer``, plus ``prompt`` / ``reward_model.ground_truth`` in
DAPO-Math-17k's layout, which ``configs/grpo.yaml`` and the other paper configs read as ``val_files``).
``--generate TASK`` writes ``OUT/TASK.jsonl`` from a reasoning-gym task (``pip install 'rlvr-lightning[evalsets]'``),
with no network. Default sources (override with ``--source``, ``--split``, ``--subset``): see ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlvr_lightning.data.benchmarks import BENCHMARKS, prepare, write_jsonl


def _per_set(pairs: list[str], option: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value:
            raise SystemExit(f"{option} takes SET=VALUE, got {pair!r}")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sets", nargs="*", default=None, help=f"benchmarks to prepare, of {sorted(BENCHMARKS)} "
                                                            "(default: all, unless --generate is given)")
    p.add_argument("--generate", nargs="*", default=[], help="reasoning-gym tasks to generate (e.g. gsm_symbolic)")
    p.add_argument("--source", action="append", default=[], help="SET=HUB_NAME_OR_PATH (repeatable)")
    p.add_argument("--split", action="append", default=[], help="SET=SPLIT (repeatable)")
    p.add_argument("--subset", action="append", default=[], help="SET=CONFIG_NAME of a hub dataset (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="keep the first N questions of each set")
    p.add_argument("--size", type=int, default=200, help="questions generated per --generate task")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated sets")
    p.add_argument("--out", default="data", help="output folder (default: data/, as the configs name it)")
    args = p.parse_args(argv)
    sets = args.sets if args.sets is not None else ([] if args.generate else sorted(BENCHMARKS))
    unknown = sorted(set(sets) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown set(s) {unknown}; valid: {sorted(BENCHMARKS)} (reasoning-gym tasks go to --generate)")
    sources, splits, subsets = (_per_set(v, o) for v, o in ((args.source, "--source"), (args.split, "--split"),
                                                            (args.subset, "--subset")))
    jobs = [(name, dict(source=sources.get(name), split=splits.get(name), subset=subsets.get(name))) for name in sets]
    jobs += [(task, dict(generate=True, size=args.size, seed=args.seed)) for task in args.generate]
    for name, options in jobs:
        try:
            records = prepare(name, limit=args.limit, **options)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        path = Path(args.out) / f"{name}.jsonl"
        write_jsonl(records, path)
        print(f"{name}: {len(records)} questions from {records[0]['source'].rsplit(' row ', 1)[0]} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
