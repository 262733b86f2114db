"""Grade-school word problems with integer answers: the training and test data of ``configs/smollm2_cpu.yaml``.

No grade-school math set (GSM8K) ships in a PyPI package, and the machines this project runs on have no model hub
or dataset hub, so this script writes small one- and two-step word problems from eight templates (add, take away,
multiply, share, and mixes of them) with small numbers, seeded::

    python scripts/make_grade_school_data.py    # -> assets/grade_school/{train,test}.jsonl

Each line is ``{"question": ..., "answer": "<integer>", "template": <0-7>}``: the field names a user's own file
might have, which the config maps with ``data.prompt_field: question``. Questions are distinct within and across the
two files. What it leaves out: no multi-sentence reasoning chains, no units or fractions.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mia",
         "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara"]


def _t0(r: random.Random, n: str) -> tuple[str, int]:
    a, b = r.randint(2, 20), r.randint(2, 20)
    return f"{n} has {a} apples and buys {b} more. How many apples does {n} have now?", a + b


def _t1(r: random.Random, n: str) -> tuple[str, int]:
    b = r.randint(1, 15)
    a = b + r.randint(1, 15)
    return f"{n} had {a} stickers and gave {b} of them to a friend. How many stickers does {n} have left?", a - b


def _t2(r: random.Random, n: str) -> tuple[str, int]:
    a, b = r.randint(2, 12), r.randint(2, 9)
    return f"A box holds {a} pencils. How many pencils are in {b} boxes?", a * b


def _t3(r: random.Random, n: str) -> tuple[str, int]:
    b, q = r.randint(2, 9), r.randint(2, 10)
    return f"{b * q} cookies are shared equally among {b} children. How many cookies does each child get?", q


def _t4(r: random.Random, n: str) -> tuple[str, int]:
    a, b = r.randint(2, 15), r.randint(2, 7)
    return f"{n} reads {a} pages every day. How many pages does {n} read in {b} days?", a * b


def _t5(r: random.Random, n: str) -> tuple[str, int]:
    a, b = r.randint(5, 20), r.randint(5, 20)
    return f"A class has {a} girls and {b} boys. How many students are in the class?", a + b


def _t6(r: random.Random, n: str) -> tuple[str, int]:
    b, c = r.randint(1, 10), r.randint(1, 10)
    a = b + c + r.randint(1, 20)
    return (f"{n} has {a} dollars, spends {b} dollars on a book and {c} dollars on lunch. "
            f"How many dollars does {n} have left?", a - b - c)


def _t7(r: random.Random, n: str) -> tuple[str, int]:
    b = r.randint(1, 10)
    a, c = b + r.randint(1, 15), r.randint(1, 10)
    return f"There are {a} birds on a tree. {b} fly away, then {c} more land on it. How many birds are on the tree?", \
        a - b + c


TEMPLATES: list[Callable[[random.Random, str], tuple[str, int]]] = [_t0, _t1, _t2, _t3, _t4, _t5, _t6, _t7]


def make_problems(n: int, rng: random.Random, seen: set[str]) -> list[dict]:
    """``n`` distinct problems not in ``seen`` (which they are added to), the templates taken in turn."""
    rows: list[dict] = []
    while len(rows) < n:
        k = len(rows) % len(TEMPLATES)
        question, answer = TEMPLATES[k](rng, rng.choice(NAMES))
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": str(answer), "template": k})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "grade_school")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--test", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng, seen = random.Random(args.seed), set()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", args.train), ("test", args.test)):
        rows = make_problems(n, rng, seen)
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {args.out / f'{name}.jsonl'}: {len(rows)} problems")


if __name__ == "__main__":
    main()
