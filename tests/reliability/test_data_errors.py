"""Bad prompt files are refused by the real ``rlvr fit`` with the file, the 1-based line and the field named.

Overlong prompts are dropped with a warning that gives their number (``overlong_prompts: drop``), or refused with
the row named (``overlong_prompts: error``). Nothing is loaded before the files are checked.
"""

from __future__ import annotations

import warnings

import pytest
from reliability_helpers import good_rows, run_cli, write_jsonl

import rlvr_lightning.models
from rlvr_lightning.data import PromptFormatError

ROWS = good_rows(8)
CASES = {
    "malformed_line": (
        [ROWS[0], ROWS[1], '{"prompt": "1+1=", "answer": ', ROWS[3]],
        r"{name} line 3: malformed JSON",
    ),
    "missing_prompt": (
        [ROWS[0], {"question": "1+1=", "answer": "2"}],
        r"{name} line 2: missing prompt field 'prompt'",
    ),
    "missing_answer": (
        [ROWS[0], ROWS[1], {"prompt": "1+1="}],
        r"{name} line 3: missing answer field 'answer'",
    ),
    "prompt_not_string": (
        [{"prompt": 12, "answer": "2"}],
        r"{name} line 1: prompt field 'prompt' must be a string or a list of chat messages .*got int",
    ),
    "answer_not_string": (
        [ROWS[0], {"prompt": "1+1=", "answer": ["2"]}],
        r"{name} line 2: answer field 'answer' must be a string \(or a number\), got list",
    ),
    "empty_file": ([], r"{name}: no records \(empty file\)"),
    "blank_lines_only": (["", "   "], r"{name}: no records \(empty file\)"),
}


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("a model was loaded before the prompt files were checked")

    monkeypatch.setattr(rlvr_lightning.models, "load_causal_lm", refuse)


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_refused_with_file_line_and_field(tmp_path, no_model_load, split, case):
    rows, pattern = CASES[case]
    name = f"bad_{split}.jsonl"
    bad = write_jsonl(tmp_path / name, rows)
    good = write_jsonl(tmp_path / "good.jsonl", good_rows(8))
    files = {"train": (bad, good), "val": (good, bad)}[split]
    with pytest.raises(PromptFormatError, match=pattern.format(name=name.replace(".", r"\."))):
        run_cli(tmp_path, "--data.train_files", files[0], "--data.val_files", files[1])


def test_overlong_prompts_dropped_and_counted(tmp_path):
    # 10 prompts of 4 characters ("3+3=") and 2 of 6 ("10+10="); the tokenizer is character-level
    train = write_jsonl(tmp_path / "train.jsonl", good_rows(12))
    val = write_jsonl(tmp_path / "val.jsonl", good_rows(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli, _ = run_cli(
            tmp_path,
            "--data.train_files",
            train,
            "--data.val_files",
            val,
            "--data.max_prompt_length",
            "5",
            "--trainer.max_steps",
            "1",
        )
    messages = [str(w.message) for w in caught]
    assert any("dropped 2 of 12 prompts longer than max_prompt_length=5 tokens" in m for m in messages), (
        messages
    )
    assert cli.datamodule.num_dropped_prompts == 2
    assert len(cli.datamodule.train_prompts) == 10
    assert cli.trainer.global_step == 1  # the run went on with the prompts that fit


def test_overlong_prompt_refused_when_asked(tmp_path, no_model_load):
    rows = good_rows(4) + [{"prompt": "1" * 40 + "+1=", "answer": "x"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(
        ValueError, match=r"train\.jsonl line 5: prompt has 43 tokens, more than max_prompt_length=32"
    ):
        run_cli(tmp_path, "--data.train_files", train, "--data.overlong_prompts", "error")


def test_missing_file_named(tmp_path, no_model_load):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(PromptFormatError, match=f"{missing}: no such file"):
        run_cli(tmp_path, "--data.train_files", missing)
