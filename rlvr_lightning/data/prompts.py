"""Prompt sources: load question/answer records from files or ``datasets``, format and tokenize them.

Records come from local JSONL, JSON (a list of objects) or Parquet files, from a ``datasets`` hub name, or from a
local dataset directory (written by ``Dataset.save_to_disk`` or holding data files). Each record must have a prompt
field and an answer field (names configurable; ``a.b`` reads a nested field). Validation errors name the file (or
dataset and split), the 1-based line/row number and the field.

Conventions (decided here, documented in ``docs/``):

- The prompt is a non-empty string, or a list of chat messages ``{"role": ..., "content": ...}`` (used as-is with
  the chat template).
- The answer is a string; an ``int`` or ``float`` answer is converted with ``str`` (``3`` -> ``"3"``,
  ``0.5`` -> ``"0.5"``); booleans, ``None``, lists and objects are refused.
- A JSON or JSONL file with no records is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PromptFormat", "PromptFormatError", "PromptRecord", "PromptSource", "format_prompts", "get_field",
           "load_records"]


class PromptFormatError(ValueError):
    """A prompt source that cannot be read or a record that does not validate."""


@dataclass
class PromptRecord:
    """One question with its reference answer.

    Attributes:
        prompt: the raw prompt (a string or a list of chat messages).
        answer: the reference answer, as a string.
        fields: the whole source record (for prompt templates and reward keyword arguments).
        where: human-readable provenance, e.g. ``"train.jsonl line 3"``.
        text: the formatted prompt text (filled by :func:`format_prompts`).
        token_ids: the formatted prompt's token ids (filled by :func:`format_prompts`).
    """

    prompt: str | list[dict[str, Any]]
    answer: str
    fields: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    text: str = ""
    token_ids: list[int] = field(default_factory=list)


MISSING = object()  # what get_field returns for an absent field
RowSelector = Callable[[Any], list[int]]  # an Arrow table -> the indices of the rows to read


def get_field(record: Any, name: str) -> Any:
    """``record[name]``, where ``a.b.c`` walks nested objects (a literal key containing dots wins); ``MISSING``
    when absent."""
    if isinstance(record, dict) and name in record:
        return record[name]
    cur = record
    for part in name.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return MISSING
    return cur


def _validate(raw: Any, where: str, prompt_field: str, answer_field: str) -> PromptRecord:
    if not isinstance(raw, dict):
        raise PromptFormatError(f"{where}: expected an object with fields, got {type(raw).__name__}")
    prompt = get_field(raw, prompt_field)
    if prompt is MISSING:
        raise PromptFormatError(
            f"{where}: missing prompt field {prompt_field!r} (fields present: {sorted(raw)}); "
            f"set prompt_field to the right name"
        )
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptFormatError(f"{where}: prompt field {prompt_field!r} is empty")
    elif (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        )
    ):
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        raise PromptFormatError(
            f"{where}: prompt field {prompt_field!r} must be a string or a list of chat messages "
            f"{{'role': str, 'content': str}}, got {type(prompt).__name__}"
        )
    answer = get_field(raw, answer_field)
    if answer is MISSING:
        raise PromptFormatError(
            f"{where}: missing answer field {answer_field!r} (fields present: {sorted(raw)}); "
            f"set answer_field to the right name"
        )
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise PromptFormatError(
            f"{where}: answer field {answer_field!r} must be a string (or a number), got {type(answer).__name__}"
        )
    return PromptRecord(prompt=prompt, answer=str(answer), fields=dict(raw), where=where)


def _read_jsonl(path: str) -> list[tuple[str, Any]]:
    name = os.path.basename(path)
    rows: list[tuple[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{name} line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise PromptFormatError(
                    f"{name} line {lineno}: malformed JSON ({e.msg} at column {e.colno})"
                ) from None
    return rows


def _read_json(path: str) -> list[tuple[str, Any]]:
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise PromptFormatError(
                f"{name} line {e.lineno}: malformed JSON ({e.msg} at column {e.colno})"
            ) from None
    if not isinstance(data, list):
        raise PromptFormatError(f"{name}: expected a JSON list of objects, got {type(data).__name__}")
    return [(f"{name} row {i}", r) for i, r in enumerate(data, start=1)]


def _read_parquet(path: str, select: RowSelector | None = None) -> list[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise PromptFormatError(f"{name}: cannot read Parquet file ({e})") from None
    if table.num_rows == 0:
        raise PromptFormatError(f"{name}: no records (empty file)")
    if select is None:
        return [(f"{name} row {i}", r) for i, r in enumerate(table.to_pylist(), start=1)]
    keep = select(table)
    rows = table.take(pa.array(keep, type=pa.int64())).to_pylist()
    return [(f"{name} row {i + 1}", r) for i, r in zip(keep, rows)]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}


def load_saved_split(path: str, split: str) -> Any | None:
    """The ``split`` of a ``save_to_disk`` folder at ``path`` (a whole saved Dataset is returned as it is); None when
    ``path`` is no such folder. Raises :class:`PromptFormatError` naming the splits when ``split`` is missing."""
    if not (os.path.isdir(path) and any(os.path.exists(os.path.join(path, f))
                                        for f in ("dataset_info.json", "dataset_dict.json", "state.json"))):
        return None
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PromptFormatError(f"dataset {path!r} has no split {split!r}; splits: {sorted(ds)}")
        ds = ds[split]
    return ds


def _read_dataset(dataset: str, split: str, select: RowSelector | None = None) -> list[tuple[str, Any]]:
    import datasets

    ds = load_saved_split(dataset, split)
    if ds is None:
        ds = datasets.load_dataset(dataset, split=split)
    label = f"dataset {os.path.basename(os.path.normpath(dataset))}[{split}]"
    if select is None:
        return [(f"{label} row {i}", r) for i, r in enumerate(ds, start=1)]
    keep = select(ds.with_format("arrow")[:])  # the selector reads a column or two, not every row
    return [(f"{label} row {i + 1}", r) for i, r in zip(keep, ds.select(keep))]


def _read_file(path: str, select: RowSelector | None) -> list[tuple[str, Any]]:
    """The ``(where, raw record)`` rows of one file, chosen by its extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise PromptFormatError(f"{path}: unknown file type {ext!r}; valid: {sorted(_READERS)}")
    if not os.path.isfile(path):
        raise PromptFormatError(f"{path}: no such file")
    if ext == ".parquet":  # (its rows may all be de-duplicated away; an empty file is refused by the reader)
        return _read_parquet(path, select)
    rows = _READERS[ext](path)
    if not rows:
        raise PromptFormatError(f"{os.path.basename(path)}: no records (empty file)")
    return rows


def load_records(
    files: str | Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    split: str = "train",
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    select: RowSelector | None = None,
) -> list[PromptRecord]:
    """Read and validate question/answer records.

    Args:
        files: one path or a list of paths (``.jsonl``, ``.json``, ``.parquet``), read in order.
        dataset: a ``datasets`` hub name or a local dataset directory (used when ``files`` is None).
        split: the split of ``dataset``.
        prompt_field: the prompt's field name (``a.b`` for a nested field).
        answer_field: the answer's field name (``a.b`` for a nested field).
        select: for Parquet files and datasets, a function of the Arrow table that returns the indices of the rows
            to read (in order); the others are neither converted nor validated (used to drop duplicates without
            reading every row, see :mod:`rlvr_lightning.data.dedup`). JSON and JSONL files are read whole.

    Returns:
        The records, in source order.

    Raises:
        PromptFormatError: a malformed line, a missing or mistyped field, an empty source (message names the file,
            the 1-based line or row, and the field).
    """
    if files is not None and dataset is not None:
        raise PromptFormatError("give either files or dataset, not both")
    rows: list[tuple[str, Any]] = []
    if files is not None:
        paths = [files] if isinstance(files, str) else list(files)
        if not paths:
            raise PromptFormatError("files is an empty list; give at least one path")
        for path in paths:
            rows.extend(_read_file(path, select))
    elif dataset is not None:
        rows = _read_dataset(dataset, split, select)
        if not rows:
            raise PromptFormatError(f"dataset {dataset!r} split {split!r}: no records")
    else:
        raise PromptFormatError("no prompt source: give files or dataset")
    return [_validate(raw, where, prompt_field, answer_field) for where, raw in rows]


@dataclass(frozen=True)
class PromptSource:
    """Where question records come from (local files or a ``datasets`` source) and which fields hold what.

    Attributes:
        files: one path or a list of paths (``.jsonl``, ``.json``, ``.parquet``).
        dataset: a ``datasets`` hub name or a local dataset directory (instead of ``files``).
        split: the split of ``dataset``.
        prompt_field: the prompt's field name (``a.b`` for a nested field).
        answer_field: the answer's field name (``a.b`` for a nested field).
    """

    files: str | list[str] | None = None
    dataset: str | None = None
    split: str = "train"
    prompt_field: str = "prompt"
    answer_field: str = "answer"

    @property
    def given(self) -> bool:
        """Whether files or a dataset are named."""
        return self.files is not None or self.dataset is not None

    def load(self) -> list[PromptRecord]:
        """The validated records, in source order (see :func:`load_records`)."""
        return load_records(self.files, dataset=self.dataset, split=self.split, prompt_field=self.prompt_field,
                            answer_field=self.answer_field)


@dataclass(frozen=True)
class PromptFormat:
    """How question records become prompt text and token ids, for training and evaluation sets alike.

    Attributes:
        prompt_template: a ``str.format`` template for the user text, e.g. ``"{prompt}\\nAnswer:"``; fields are the
            record's top-level fields, plus ``prompt`` (the prompt field's value). None means ``"{prompt}"``.
            Literal braces must be doubled (``\\boxed{{}}``).
        chat_template: wrap the text with the tokenizer's chat template (``add_generation_prompt=True``); None uses
            it when the tokenizer has one.
        system_prompt: a system message for the chat template.
        max_prompt_length: the longest prompt in tokens (None: no limit).
        overlong_prompts: ``"drop"`` removes longer prompts (their number is returned), ``"error"`` refuses them.
    """

    prompt_template: str | None = None
    chat_template: bool | None = None
    system_prompt: str | None = None
    max_prompt_length: int | None = None
    overlong_prompts: Literal["drop", "error"] = "drop"

    def __post_init__(self) -> None:
        if self.overlong_prompts not in ("drop", "error"):
            raise ValueError(f"overlong_prompts must be 'drop' or 'error', got {self.overlong_prompts!r}")

    def with_template(self, prompt_template: str | None) -> PromptFormat:
        """This format with ``prompt_template`` instead of its own, unless that is None (an eval set's template)."""
        return self if prompt_template is None else dataclasses.replace(self, prompt_template=prompt_template)


def _render(rec: PromptRecord, fmt: PromptFormat, template: str, use_chat: bool, tokenizer: Any) -> str:
    """The prompt text of one record: the template (or its chat messages) through the chat template or joined."""
    if isinstance(rec.prompt, list):
        if not use_chat:
            raise ValueError(f"{rec.where}: the prompt is a list of chat messages but no chat template is used")
        messages = list(rec.prompt)
        if fmt.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
    else:
        values = {**rec.fields, "prompt": rec.prompt}
        try:
            content = template.format_map(values)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"{rec.where}: prompt_template {template!r} cannot be filled ({type(e).__name__}: {e}); "
                f"fields available: {sorted(values)} (double literal braces: '{{{{' and '}}}}')"
            ) from None
        messages = [{"role": "user", "content": content}]
        if fmt.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
    if use_chat:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in messages)


def format_prompts(
    records: list[PromptRecord], tokenizer: Any, fmt: PromptFormat | None = None, *, cache_dir: str | None = None,
    **options: Any,
) -> tuple[list[PromptRecord], int]:
    """Fill each record's ``text`` and ``token_ids``; drop or refuse prompts over ``max_prompt_length`` tokens.

    The texts are rendered first, then tokenized together, each distinct text once
    (:func:`~rlvr_lightning.data.tokenize.tokenize_texts`).

    Args:
        records: records from :func:`load_records` (modified in place).
        tokenizer: a Hugging Face tokenizer.
        fmt: the format (None: ``PromptFormat(**options)``).
        cache_dir: a folder where the token ids of a large set are cached (None: no cache).
        **options: the fields of :class:`PromptFormat` (``prompt_template``, ``chat_template``, ``system_prompt``,
            ``max_prompt_length``, ``overlong_prompts``), when ``fmt`` is None.

    Returns:
        ``(kept records, number dropped)``.
    """
    from rlvr_lightning.data.tokenize import tokenize_texts

    fmt = PromptFormat(**options) if fmt is None else fmt
    has_chat = getattr(tokenizer, "chat_template", None) is not None
    use_chat = has_chat if fmt.chat_template is None else fmt.chat_template
    if use_chat and not has_chat:
        raise ValueError(
            "chat_template=True but the tokenizer has no chat template; set a prompt_template instead"
        )
    template = "{prompt}" if fmt.prompt_template is None else fmt.prompt_template
    texts = [_render(rec, fmt, template, use_chat, tokenizer) for rec in records]
    # chat-templated text carries its special tokens already
    all_ids = tokenize_texts(texts, tokenizer, add_special_tokens=not use_chat, cache_dir=cache_dir)
    kept: list[PromptRecord] = []
    for rec, text, ids in zip(records, texts, all_ids):
        if fmt.max_prompt_length is not None and len(ids) > fmt.max_prompt_length:
            if fmt.overlong_prompts == "error":
                raise ValueError(
                    f"{rec.where}: prompt has {len(ids)} tokens, more than "
                    f"max_prompt_length={fmt.max_prompt_length}; raise max_prompt_length or set overlong_prompts='drop'"
                )
            continue
        rec.text, rec.token_ids = text, list(ids)
        kept.append(rec)
    return kept, len(records) - len(kept)
