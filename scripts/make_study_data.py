"""Seeded data of the study task (``rlvr_lightning/study_task.py``): warm-up rows and RL prompts.

    python scripts/make_study_data.py                      # -> assets/study (the shipped files)
    python scripts/make_study_data.py --out runs/x --slip 0.9 --rows 40

Writes, under ``--out``:
  warmup/train.jsonl  ``{"prompt": "57=", "answer": "23+34"}``: ``--rows`` rows per N (20..180), ``a`` uniform over
                      the valid choices; where ``N - a`` needs a borrow, with probability ``--slip`` the row forgets
                      it (``b + 10``, a learned wrong shortcut; kept correct where ``b + 10`` would not be two
                      digits)
  warmup/val.jsonl    one row per N drawn the same way (``prepare_demo_model.py`` prints exact-match accuracy on
                      it, which means little on a many-answers task)
  rl/train.jsonl      ``{"prompt": "57=", "answer": "57"}`` for every N: the reward checks ``a + b == N``
  rl/val.jsonl        the same prompts (the study measures entropy and diversity, not generalization)
  rl/narrow.jsonl     the low-diversity slice: the ``--narrow`` consecutive N from ``--narrow-start``
  rl/demo_train.jsonl the demo's RL prompts: every N not divisible by 5
  rl/demo_val.jsonl   the demo's held-out prompts: every N divisible by 5 (no RL update sees them)
Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlvr_lightning.study_task import N_MAX, N_MIN, needs_borrow, valid_answers  # noqa: E402


def choice_weights(n: int, zipf: float, seed: int, zipf_on: str = "prompt") -> list[float]:
    """Warm-up weights of the valid ``a`` for ``"n="``: uniform for ``zipf == 0``, else ``1 / rank ** zipf`` over a
    random order: of the answers of each prompt (``zipf_on="prompt"``: a head of favourite answers per prompt), or
    of the ten units digits of ``a``, the same for every prompt (``"units"``: a favourite digit)."""
    answers = valid_answers(n)
    if zipf == 0:
        return [1.0] * len(answers)
    if zipf_on == "units":
        digit_rank = list(range(1, 11))
        random.Random(seed).shuffle(digit_rank)
        return [1.0 / digit_rank[a % 10] ** zipf for a, _ in answers]
    ranks = list(range(1, len(answers) + 1))
    random.Random(seed * 1_000 + n).shuffle(ranks)
    return [1.0 / r**zipf for r in ranks]


def is_trap(n: int, a: int, slip_on: str) -> bool:
    """Where the warm-up slips: on borrow cases (``"borrow"``), or on every ``a`` of a third of the prompts
    (``"prompt"``: ``n % 3 == 0``), so that the slip does not depend on the choice of ``a``."""
    return needs_borrow(n, a) if slip_on == "borrow" else n % 3 == 0


def warmup_row(n: int, rng: random.Random, slip: float, slip_on: str = "borrow",
               weights: list[float] | None = None) -> dict[str, str]:
    """One warm-up row for ``"n="``: a valid ``a`` drawn by ``weights`` (uniform if None); a trap case is written
    wrong (``b + 10``) with probability ``slip``."""
    answers = valid_answers(n)
    a, b = rng.choices(answers, weights)[0] if weights else rng.choice(answers)
    if is_trap(n, a, slip_on) and b + 10 <= 99 and rng.random() < slip:
        b += 10
    return {"prompt": f"{n}=", "answer": f"{a}+{b}"}


def make(rows: int, slip: float, narrow_start: int, narrow: int, seed: int, slip_on: str = "borrow",
         zipf: float = 0.0, zipf_on: str = "prompt") -> dict[str, list[dict[str, str]]]:
    """The files' rows by relative path."""
    rng = random.Random(seed)
    w = {n: choice_weights(n, zipf, seed, zipf_on) if zipf else None for n in range(N_MIN, N_MAX + 1)}
    train = [warmup_row(n, rng, slip, slip_on, w[n]) for n in range(N_MIN, N_MAX + 1) for _ in range(rows)]
    rng.shuffle(train)
    vrng = random.Random(seed + 1)
    val = [warmup_row(n, vrng, slip, slip_on, w[n]) for n in range(N_MIN, N_MAX + 1)]
    rl = [{"prompt": f"{n}=", "answer": str(n)} for n in range(N_MIN, N_MAX + 1)]
    if not (N_MIN <= narrow_start and narrow_start + narrow - 1 <= N_MAX):
        raise ValueError(f"the narrow slice {narrow_start}..{narrow_start + narrow - 1} leaves {N_MIN}..{N_MAX}")
    slice_ = [r for r in rl if narrow_start <= int(r["answer"]) < narrow_start + narrow]
    return {"warmup/train.jsonl": train, "warmup/val.jsonl": val, "rl/train.jsonl": rl, "rl/val.jsonl": rl,
            "rl/narrow.jsonl": slice_, "rl/demo_train.jsonl": [r for r in rl if int(r["answer"]) % 5],
            "rl/demo_val.jsonl": [r for r in rl if int(r["answer"]) % 5 == 0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "study")
    parser.add_argument("--rows", type=int, default=40, help="warm-up rows per prompt")
    parser.add_argument("--slip", type=float, default=0.8, help="share of borrow cases written without the borrow")
    parser.add_argument("--narrow-start", type=int, default=100)
    parser.add_argument("--narrow", type=int, default=16, help="prompts in the low-diversity slice")
    parser.add_argument("--slip-on", choices=["borrow", "prompt"], default="borrow",
                        help="borrow: the slip hits borrow cases; prompt: every answer of the prompts with N % 3 == 0")
    parser.add_argument("--zipf", type=float, default=0.0, help="skew of the warm-up choice of a (0: uniform)")
    parser.add_argument("--zipf-on", choices=["prompt", "units"], default="prompt",
                        help="prompt: favourite answers per prompt; units: favourite units digits of a, all prompts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = make(args.rows, args.slip, args.narrow_start, args.narrow, args.seed, args.slip_on, args.zipf,
                 args.zipf_on)
    for rel, rows in files.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(", ".join(f"{rel} {len(rows)}" for rel, rows in files.items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()
