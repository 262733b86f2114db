"""The study task: reward, distinct-correct count and the data generator, each against a naive check."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr_lightning.metrics import distinct_per_group
from rlvr_lightning.study_task import (
    N_MAX,
    N_MIN,
    is_correct,
    needs_borrow,
    parse,
    sum_reward,
    valid_answers,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n", [20, 21, 57, 109, 110, 150, 179, 180])
def test_reward_accepts_exactly_the_two_digit_decompositions(n):
    every = [f"{a:02d}+{b:02d}" for a in range(100) for b in range(100)]
    scores = sum_reward(every, [str(n)] * len(every))
    accepted = {t for t, s in zip(every, scores) if s == 1.0}
    naive = {f"{a}+{b}" for a in range(10, 100) for b in range(10, 100) if a + b == n}
    assert accepted == naive
    assert {f"{a}+{b}" for a, b in valid_answers(n)} == naive
    assert set(scores) <= {0.0, 1.0}


def test_reward_rejects_malformed_text_and_tolerates_surrounding_space():
    bad = ["", "57", "5+52", "23+34+0", "23 + 34", "023+34", "2a+34", "23-34", "23+34 x", "+", "09+48"]
    assert sum_reward(bad, ["57"] * len(bad)) == [0.0] * len(bad)
    assert sum_reward([" 23+34\n"], [57]) == [1.0]
    assert parse("23+34") == (23, 34) and parse("09+48") is None
    assert is_correct("48+09", "57") is False


def test_distinct_correct_against_a_naive_count():
    rng = random.Random(0)
    for _ in range(50):
        groups = [rng.randrange(4) for _ in range(24)]
        texts = [rng.choice(["23+34", "30+27", "10+47", "11+11", " 23+34"]) for _ in groups]
        ok = [is_correct(t, 57) for t in texts]
        naive = [len({t.strip() for t, o, g2 in zip(texts, ok, groups) if o and g2 == g}) for g in sorted(set(groups))]
        assert distinct_per_group(texts, groups, ok) == pytest.approx(sum(naive) / len(naive))
        assert distinct_per_group(texts, groups) == pytest.approx(
            sum(len({t.strip() for t, g2 in zip(texts, groups) if g2 == g}) for g in set(groups)) / len(set(groups)))
    assert distinct_per_group([], [], []) == 0.0
    assert distinct_per_group(["23+34", "23+34"], [0, 1], [True, False]) == 0.5
    with pytest.raises(ValueError):
        distinct_per_group(["a"], [0], [True, False])


def test_needs_borrow_matches_column_subtraction():
    for n in range(N_MIN, N_MAX + 1):
        for a, b in valid_answers(n):
            assert needs_borrow(n, a) == (n % 10 - a % 10 < 0)
            assert (b % 10) == (n - a) % 10


def read(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generator_is_seeded_and_the_shipped_assets_are_its_output(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_study_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for rel in ("warmup/train.jsonl", "warmup/val.jsonl", "rl/train.jsonl", "rl/val.jsonl", "rl/narrow.jsonl"):
        assert (tmp_path / rel).read_bytes() == (REPO / "assets" / "study" / rel).read_bytes(), rel


def test_warmup_rows_are_correct_or_the_no_borrow_slip():
    rows = read(REPO / "assets" / "study" / "warmup" / "train.jsonl")
    per_n: dict[int, int] = {}
    slips = borrow_rows = 0
    for r in rows:
        n = int(r["prompt"].rstrip("="))
        per_n[n] = per_n.get(n, 0) + 1
        a, b = parse(r["answer"])
        if needs_borrow(n, a) and n - a + 10 <= 99:
            borrow_rows += 1
            assert b in (n - a, n - a + 10)
            slips += b == n - a + 10
        else:
            assert a + b == n, r
    assert set(per_n) == set(range(N_MIN, N_MAX + 1)) and set(per_n.values()) == {40}
    assert 0.75 < slips / borrow_rows < 0.85  # --slip 0.8


def test_rl_prompts_and_the_narrow_slice():
    rl = read(REPO / "assets" / "study" / "rl" / "train.jsonl")
    assert [r["prompt"] for r in rl] == [f"{n}=" for n in range(N_MIN, N_MAX + 1)]
    assert all(r["answer"] == r["prompt"][:-1] for r in rl)
    narrow = read(REPO / "assets" / "study" / "rl" / "narrow.jsonl")
    assert [int(r["answer"]) for r in narrow] == list(range(100, 116))
