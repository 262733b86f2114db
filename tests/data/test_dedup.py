"""Duplicate prompts: dropped by default with their count reported, kept on request, found the same way in JSONL,
Parquet and ``datasets`` sources (each checked against a plain loop over every row), and epochs counted over the
distinct prompts of a DAPO-Math-17k-shaped set at the paper's batch size."""

from __future__ import annotations

import json
import logging
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr_lightning.batching import total_epochs
from rlvr_lightning.data import RolloutDataModule
from rlvr_lightning.data.dedup import DuplicateReport, load_unique_records, prompt_key
from rlvr_lightning.data.prompts import PromptSource


def dapo_rows(distinct: int, copies: int, seed: int = 0) -> list[dict]:
    """Rows shaped like DAPO-Math-17k's (chat-message prompt, nested answer, a per-row id), each prompt ``copies``
    times, shuffled."""
    rows = [{"data_source": "math_dapo",
             "prompt": [{"content": f"Solve: what is {i} + {i}? Answer: $Answer", "role": "user"}],
             "reward_model": {"ground_truth": str(2 * i), "style": "rule-lighteval/MATH_v2"},
             "extra_info": {"index": f"{i}-{c}"}}
            for i in range(distinct) for c in range(copies)]
    random.Random(seed).shuffle(rows)
    return rows


def first_occurrences(rows: list[dict]) -> tuple[list[int], int, int]:
    """The reference: indices of each prompt's first row, the number of later rows, and of those with another
    answer, by a plain loop over every row."""
    first: dict[str, str] = {}
    keep, dropped, conflicting = [], 0, 0
    for i, r in enumerate(rows):
        key = json.dumps([[m["role"], m["content"]] for m in r["prompt"]])
        answer = r["reward_model"]["ground_truth"]
        if key in first:
            dropped += 1
            conflicting += first[key] != answer
        else:
            first[key] = answer
            keep.append(i)
    return keep, dropped, conflicting


@pytest.fixture
def rows():
    rows = dapo_rows(distinct=30, copies=4)
    last = max(i for i, r in enumerate(rows) if r["extra_info"]["index"].startswith("0-"))
    rows[last]["reward_model"] = {"ground_truth": "999", "style": "x"}  # a later duplicate with another answer
    return rows


def write(tmp_path, rows, kind):
    if kind == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return PromptSource(files=str(path), prompt_field="prompt", answer_field="reward_model.ground_truth")
    table = pa.Table.from_pylist(rows)
    if kind == "parquet":
        pq.write_table(table, tmp_path / "d.parquet")
        return PromptSource(files=str(tmp_path / "d.parquet"), prompt_field="prompt",
                            answer_field="reward_model.ground_truth")
    import datasets

    datasets.Dataset(table).save_to_disk(str(tmp_path / "ds"))
    return PromptSource(dataset=str(tmp_path / "ds"), prompt_field="prompt", answer_field="reward_model.ground_truth")


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "dataset"])
def test_first_record_of_each_prompt_is_kept_and_the_rest_counted(tmp_path, rows, kind):
    source = write(tmp_path, rows, kind)
    records, report = load_unique_records(source)
    keep, dropped, conflicting = first_occurrences(rows)
    assert [r.fields["extra_info"]["index"] for r in records] == [rows[i]["extra_info"]["index"] for i in keep]
    assert [r.answer for r in records] == [rows[i]["reward_model"]["ground_truth"] for i in keep]
    assert (report.rows, report.dropped, report.conflicting) == (len(rows), dropped, conflicting)
    assert report.dropped == 90 and report.conflicting == 1
    # provenance names the original row (1-based), not the position among the kept ones
    assert records[1].where.endswith(f"row {keep[1] + 1}") or records[1].where.endswith(f"line {keep[1] + 1}")
    all_records, kept_report = load_unique_records(source, keep_duplicates=True)
    assert len(all_records) == len(rows) and kept_report == DuplicateReport(rows=len(rows))


def test_duplicates_are_found_across_files_of_one_source(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.parquet"
    a.write_text("".join(json.dumps({"q": f"p{i}", "a": str(i)}) + "\n" for i in range(5)))
    pq.write_table(pa.Table.from_pylist([{"q": f"p{i}", "a": str(i)} for i in range(3, 8)]), b)
    records, report = load_unique_records(PromptSource(files=[str(a), str(b)], prompt_field="q", answer_field="a"))
    assert [r.prompt for r in records] == [f"p{i}" for i in range(8)]
    assert (report.rows, report.dropped, report.conflicting) == (10, 2, 0)
    parquet_only = load_unique_records(PromptSource(files=[str(b), str(b)], prompt_field="q", answer_field="a"))
    assert len(parquet_only[0]) == 5 and parquet_only[1].dropped == 5


def test_prompt_key_compares_roles_and_contents_of_messages():
    a = [{"role": "user", "content": "x"}]
    assert prompt_key(a) == prompt_key([{"content": "x", "role": "user", "name": None}])
    assert prompt_key(a) != prompt_key([{"role": "system", "content": "x"}])
    assert prompt_key("x") != prompt_key(a)


def test_a_malformed_row_is_still_refused_with_its_row(tmp_path):
    rows = [{"q": "p1", "a": "1"}, {"q": "p1", "a": "1"}, {"q": None, "a": "2"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"x.parquet row 3: prompt field 'q' must be a string"):
        load_unique_records(PromptSource(files=str(tmp_path / "x.parquet"), prompt_field="q", answer_field="a"))


def test_datamodule_drops_duplicates_reports_them_and_counts_epochs_over_distinct_prompts(tmp_path, tokenizer_dir,
                                                                                           caplog):
    """A DAPO-Math-17k-shaped Parquet file (each prompt 100 times) at the paper's P = 512: one data epoch is
    ``distinct // 512`` steps, so a 500-step run sees many epochs (EpochPAR's schedule moves); kept whole, one
    epoch would be longer than the run."""
    distinct, copies, P = 1100, 100, 512
    pq.write_table(pa.Table.from_pylist(dapo_rows(distinct, copies)), tmp_path / "dapo.parquet")
    common = dict(tokenizer=tokenizer_dir, train_files=str(tmp_path / "dapo.parquet"), prompt_field="prompt",
                  answer_field="reward_model.ground_truth", prompts_per_step=P, chat_template=True, engine="hf",
                  rewards=["rlvr_lightning.rewards.ExactMatchReward"], token_cache=None)
    from tests_data_helpers import CHAT_TEMPLATE
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(tmp_path / "tok")
    common["tokenizer"] = str(tmp_path / "tok")
    with caplog.at_level(logging.INFO):
        dm = RolloutDataModule(**common)
        dm.setup("fit")
    assert len(dm.train_prompts) == distinct and dm.num_duplicate_prompts == distinct * (copies - 1)
    assert f"dropped {distinct * (copies - 1):,} duplicate prompts of {distinct * copies:,} records" in caplog.text
    assert dm.steps_per_epoch == distinct // P == 2
    assert total_epochs(None, 500, dm.steps_per_epoch, 1) == 250
    whole = RolloutDataModule(**common, keep_duplicates=True)
    whole.setup("fit")
    assert whole.num_duplicate_prompts == 0 and whole.steps_per_epoch == distinct * copies // P == 214
    assert total_epochs(None, 500, whole.steps_per_epoch, 1) == 3


def test_data_stats_script_counts_epochs_of_the_epoch_wise_par_recipe(tmp_path):
    """``scripts/data_stats.py --config configs/par_epoch.yaml --train_files F``: the paper's P = 512 and 500 steps
    over a DAPO-shaped file of 1,100 distinct prompts, each 20 times."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    pq.write_table(pa.Table.from_pylist(dapo_rows(1100, 20)), tmp_path / "dapo.parquet")
    proc = subprocess.run([sys.executable, "scripts/data_stats.py", "--config", "configs/par_epoch.yaml",
                           "--train_files", str(tmp_path / "dapo.parquet")], cwd=repo, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = dict(line.split(": ") for line in proc.stdout.splitlines())
    assert figures == {"rows": "22,000", "duplicates_dropped": "20,900", "distinct_prompts": "1,100",
                       "prompts_per_step": "512", "steps_per_epoch": "2", "epochs_in_run": "250"}
