"""Prompt loading from JSONL / JSON / Parquet / datasets directories, validation errors and formatting."""

from __future__ import annotations

import json

import pytest

from rlvr_lightning.data.prompts import PromptFormat, PromptFormatError, PromptSource, format_prompts, load_records

ROWS = [
    {"q": {"text": "1+1="}, "prompt": "1+1=", "answer": "2"},
    {"q": {"text": "2+3="}, "prompt": "2+3=", "answer": 5},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_jsonl_json_parquet_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = load_records(write_jsonl(tmp_path / "a.jsonl", ROWS))
    (tmp_path / "b.json").write_text(json.dumps(ROWS))
    b = load_records(str(tmp_path / "b.json"))
    pq.write_table(
        pa.Table.from_pylist([{"prompt": r["prompt"], "answer": str(r["answer"])} for r in ROWS]),
        tmp_path / "c.parquet",
    )
    c = load_records(str(tmp_path / "c.parquet"))
    for recs in (a, b, c):
        assert [(r.prompt, r.answer) for r in recs] == [("1+1=", "2"), ("2+3=", "5")]
    assert a[1].where == "a.jsonl line 2" and c[0].where == "c.parquet row 1"
    both = load_records([str(tmp_path / "a.jsonl"), str(tmp_path / "b.json")])
    assert len(both) == 4


def test_nested_field_and_numeric_answer(tmp_path):
    recs = load_records(write_jsonl(tmp_path / "a.jsonl", ROWS), prompt_field="q.text")
    assert [r.prompt for r in recs] == ["1+1=", "2+3="]
    assert recs[1].answer == "5"  # numbers become strings


def test_saved_dataset_dir(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "7*6=", "answer": "42"}]).save_to_disk(str(tmp_path / "ds"))
    recs = load_records(dataset=str(tmp_path / "ds"))
    assert recs[0].prompt == "7*6=" and recs[0].answer == "42" and "row 1" in recs[0].where


@pytest.mark.parametrize(
    "content, pattern",
    [
        (
            '{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n',
            r"bad\.jsonl line 2: malformed JSON",
        ),
        (
            '{"prompt": "a", "answer": "1"}\n\n{"answer": "1"}\n',
            r"bad\.jsonl line 3: missing prompt field 'prompt'",
        ),
        ('{"prompt": "a"}\n', r"bad\.jsonl line 1: missing answer field 'answer'"),
        ('{"prompt": 3, "answer": "1"}\n', r"bad\.jsonl line 1: prompt field 'prompt' must be a string"),
        ('{"prompt": "a", "answer": [1]}\n', r"bad\.jsonl line 1: answer field 'answer' must be a string"),
        ('{"prompt": "a", "answer": true}\n', r"bad\.jsonl line 1: answer field 'answer' must be a string"),
        ('{"prompt": "  ", "answer": "1"}\n', r"bad\.jsonl line 1: prompt field 'prompt' is empty"),
        ("[1, 2]\n", r"bad\.jsonl line 1: expected an object"),
        ("\n\n", r"bad\.jsonl: no records"),
    ],
)
def test_jsonl_errors_name_file_line_field(tmp_path, content, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(PromptFormatError, match=pattern):
        load_records(str(path))


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('[{"prompt": "a", "answer": "1"},\n {"prompt": }]', r"bad\.json line 2: malformed JSON"),
        ('{"prompt": "a", "answer": "1"}', r"bad\.json: expected a JSON list of objects"),
        (
            '[{"prompt": "a", "answer": "1"}, {"prompt": "b"}]',
            r"bad\.json row 2: missing answer field 'answer'",
        ),
        ("[]", r"bad\.json: no records"),
    ],
)
def test_json_errors(tmp_path, content, pattern):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PromptFormatError, match=pattern):
        load_records(str(path))


def test_parquet_error_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "a", "answer": "1"}] * 2), tmp_path / "p.parquet")
    with pytest.raises(PromptFormatError, match=r"p\.parquet row 1: missing prompt field 'prompt'.*question"):
        load_records(str(tmp_path / "p.parquet"))
    with pytest.raises(PromptFormatError, match=r"broken\.parquet: cannot read Parquet"):
        (tmp_path / "broken.parquet").write_text("not parquet")
        load_records(str(tmp_path / "broken.parquet"))


def test_source_errors(tmp_path):
    with pytest.raises(PromptFormatError, match="unknown file type '.csv'"):
        load_records(str(tmp_path / "x.csv"))
    with pytest.raises(PromptFormatError, match="no such file"):
        load_records(str(tmp_path / "x.jsonl"))
    with pytest.raises(PromptFormatError, match="no prompt source"):
        load_records()


def test_template_chat_and_overlong(tmp_path, tokenizer):
    from tests_data_helpers import char_tokenizer_with_chat

    recs = load_records(write_jsonl(tmp_path / "a.jsonl", ROWS + [{"prompt": "9" * 40, "answer": "1"}]))
    kept, dropped = format_prompts(recs, tokenizer, prompt_template="Q: {prompt} A:", max_prompt_length=20)
    assert dropped == 1 and [r.text for r in kept] == ["Q: 1+1= A:", "Q: 2+3= A:"]
    assert kept[0].token_ids == tokenizer("Q: 1+1= A:")["input_ids"]
    with pytest.raises(
        ValueError, match=r"a\.jsonl line 3: prompt has 40 tokens, more than max_prompt_length=20"
    ):
        format_prompts(recs, tokenizer, max_prompt_length=20, overlong_prompts="error")
    with pytest.raises(
        ValueError, match=r"line 1: prompt_template '\{question\}' cannot be filled.*fields available"
    ):
        format_prompts(recs, tokenizer, prompt_template="{question}")
    with pytest.raises(ValueError, match="no chat template"):
        format_prompts(recs, tokenizer, chat_template=True)

    chat_tok = char_tokenizer_with_chat()
    kept, _ = format_prompts(recs[:1], chat_tok, system_prompt="be brief")
    assert kept[0].text == "<system>be brief<user>1+1=<assistant>"
    assert kept[0].token_ids == chat_tok(kept[0].text, add_special_tokens=False)["input_ids"]


def test_a_prompt_format_and_a_prompt_source_are_the_options_in_one_object(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    source = PromptSource(path, prompt_field="q.text")
    assert source.given and not PromptSource().given
    assert source.load() == load_records(path, prompt_field="q.text")
    fmt = PromptFormat(prompt_template="Q: {prompt} A:", max_prompt_length=20)
    by_object = format_prompts(source.load(), tokenizer, fmt)
    by_options = format_prompts(source.load(), tokenizer, prompt_template="Q: {prompt} A:", max_prompt_length=20)
    assert [r.text for r in by_object[0]] == [r.text for r in by_options[0]] == ["Q: 1+1= A:", "Q: 2+3= A:"]
    assert fmt.with_template(None) is fmt and fmt.with_template("{prompt}?").prompt_template == "{prompt}?"
    with pytest.raises(ValueError, match="overlong_prompts must be 'drop' or 'error', got 'skip'"):
        PromptFormat(overlong_prompts="skip")
