"""Duplicate prompts: found by their prompt field, the first occurrence kept, the rest counted.

Data sets met in practice repeat prompts: the hub copy of DAPO-Math-17k holds its ~17k prompts about 100 times
each. Trained on as they are, an "epoch" is 100 passes over the data and epoch-based schedules (``EpochPAR``)
never see a second epoch. :func:`load_unique_records` reads a source keeping the first record of each distinct
prompt (compared as the prompt field's value: a string, or the list of chat messages, including every key of each
message) and reports how many it dropped, and how many of those had an answer different from the kept one.

For Parquet files and ``datasets`` sources the duplicates are found on the Arrow table's prompt and answer columns
before any row is converted to Python, so a 1.8M-row file with 18k distinct prompts costs the reading of two
columns and 18k rows. JSON and JSONL files are parsed whole, then de-duplicated. Duplicates are found across all the
files of a source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rlvr_lightning.data.prompts import MISSING, PromptRecord, PromptSource, get_field, load_records

__all__ = ["DuplicateReport", "load_unique_records", "prompt_key"]


@dataclass
class DuplicateReport:
    """What de-duplication found in one source.

    Attributes:
        rows: records read, duplicates included.
        dropped: duplicate records dropped (``rows - dropped`` are kept).
        conflicting: dropped duplicates whose answer differs from the kept record's answer.
    """

    rows: int = 0
    dropped: int = 0
    conflicting: int = 0

    def message(self, what: str = "training set") -> str:
        """A one-line account for a log or a warning; empty when nothing was dropped."""
        if not self.dropped:
            return ""
        text = (f"{what}: dropped {self.dropped:,} duplicate prompts of {self.rows:,} records, "
                f"{self.rows - self.dropped:,} distinct prompts kept (data.keep_duplicates: true keeps them)")
        if self.conflicting:
            text += f"; {self.conflicting:,} dropped duplicates had a different answer (the first answer is kept)"
        return text


def prompt_key(value: Any) -> str | None:
    """A hashable key of a prompt field's value (a string or chat messages); None for an absent field."""
    if value is MISSING:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):  # chat messages: role and content only
        value = [[m.get("role"), m.get("content")] for m in value]
    return json.dumps(value, ensure_ascii=False, default=str)


def _answer_text(value: Any) -> str | None:
    return None if value is MISSING else str(value)


class _FirstSeen:
    """Keeps the first record of each prompt key over several tables / record lists, counting the others."""

    def __init__(self, prompt_field: str, answer_field: str) -> None:
        self.prompt_field, self.answer_field = prompt_field, answer_field
        self.answers: dict[str, str | None] = {}
        self.report = DuplicateReport()

    def is_new(self, key: str | None, answer: str | None) -> bool:
        """Record one row; True when it is the first with its key (rows without a prompt field are kept)."""
        self.report.rows += 1
        if key is None:
            return True
        if key in self.answers:
            self.report.dropped += 1
            self.report.conflicting += int(self.answers[key] != answer)
            return False
        self.answers[key] = answer
        return True

    def _column(self, table: Any, name: str) -> list[Any]:
        """The values of field ``name`` (``a.b``: nested) in every row, reading one column of ``table``."""
        top = name if name in table.column_names else name.split(".")[0]
        if top not in table.column_names:
            return [MISSING] * table.num_rows
        return [get_field({top: v}, name) for v in table.column(top).to_pylist()]

    def select(self, table: Any) -> list[int]:
        """The indices of the rows of an Arrow ``table`` whose prompt was not seen before (a ``RowSelector``)."""
        prompts = self._column(table, self.prompt_field)
        answers = self._column(table, self.answer_field)
        return [i for i, (p, a) in enumerate(zip(prompts, answers)) if self.is_new(prompt_key(p), _answer_text(a))]

    def keep_new(self, records: list[PromptRecord]) -> list[PromptRecord]:
        """The records whose prompt was not seen before (for sources read row by row)."""
        return [r for r in records if self.is_new(prompt_key(r.prompt), r.answer)]


def load_unique_records(
    source: PromptSource, *, keep_duplicates: bool = False
) -> tuple[list[PromptRecord], DuplicateReport]:
    """The records of ``source`` with one record per distinct prompt, in source order, and what was dropped.

    With ``keep_duplicates`` every record is kept (the report counts the rows only).

    Raises:
        PromptFormatError: as :func:`~rlvr_lightning.data.prompts.load_records`, for the rows that are read.
    """
    if keep_duplicates:
        records = source.load()
        return records, DuplicateReport(rows=len(records))
    seen = _FirstSeen(source.prompt_field, source.answer_field)
    files = [source.files] if isinstance(source.files, str) else list(source.files or [])
    columnar = all(f.lower().endswith(".parquet") for f in files)  # also a dataset source (no files)
    records = load_records(source.files, dataset=source.dataset, split=source.split, prompt_field=source.prompt_field,
                           answer_field=source.answer_field, select=seen.select if columnar else None)
    return (records if columnar else seen.keep_new(records)), seen.report
