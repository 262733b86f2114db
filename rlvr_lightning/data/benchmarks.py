"""Math benchmarks as evaluation files: AIME 2024/2025, AMC23, MATH-500 and Minerva from the ``datasets`` library
(a hub name or a local copy), and small sets generated offline by a PyPI package (reasoning-gym's tasks, e.g.
``gsm_symbolic``), all written in one JSONL format that ``EvalSet`` and ``val_files`` read.

``scripts/prepare_eval_sets.py`` is the command. Each output row is::

    {"id": "aime2024-0", "problem": "...", "answer": "33",
     "prompt": [{"role": "user", "content": "Solve the following math problem step by step. ..."}],
     "reward_model": {"ground_truth": "33"}, "source": "aime_2024[train] row 1"}

- ``problem`` / ``answer`` are what an ``EvalSet`` reads by default (``prompt_field: problem``), with a template of
  your own;
- ``prompt`` / ``reward_model.ground_truth`` repeat them in DAPO-Math-17k's layout, with its instruction
  (:data:`DAPO_INSTRUCTION`), so the paper configs, which read validation files with the training fields
  (``val_files: data/aime2025.jsonl``, ``prompt_field: prompt``, ``answer_field: reward_model.ground_truth``), ask
  the question as in training.

Answers are strings; a whole-number float (AMC's ``42.0``) becomes ``"42"``; an answer holding a worked solution
keeps the content of its last ``\\boxed{...}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr_lightning.data.prompts import load_saved_split

__all__ = ["BENCHMARKS", "DAPO_INSTRUCTION", "Benchmark", "last_boxed", "load_rows", "prepare", "write_jsonl"]

DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

_QUESTION_FIELDS = ("problem", "question", "Problem", "Question")
_ANSWER_FIELDS = ("answer", "Answer", "final_answer", "solution", "Solution")


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark is by default and which fields hold what (the first one a row has wins).

    Attributes:
        dataset: the ``datasets`` hub name.
        split: its split.
        subset: its configuration name (None: the default).
        question_fields: candidate names of the question field.
        answer_fields: candidate names of the answer field (a solution text gives its last ``\\boxed{}``).
    """

    dataset: str
    split: str = "test"
    subset: str | None = None
    question_fields: tuple[str, ...] = _QUESTION_FIELDS
    answer_fields: tuple[str, ...] = _ANSWER_FIELDS


BENCHMARKS: dict[str, Benchmark] = {
    "aime2024": Benchmark("HuggingFaceH4/aime_2024", split="train"),
    "aime2025": Benchmark("math-ai/aime25"),
    "amc23": Benchmark("math-ai/amc23"),
    "math500": Benchmark("HuggingFaceH4/MATH-500"),
    "minerva": Benchmark("math-ai/minervamath"),
}


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced; None if none.

    Example:
        >>> last_boxed("so $x = \\\\boxed{\\\\frac{1}{2}}$, not \\\\boxed{3")
        '\\\\frac{1}{2}'
    """
    for marker in ("\\boxed{", "\\fbox{"):
        start = text.rfind(marker)
        while start != -1:
            depth, i = 1, start + len(marker)
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            if depth == 0:
                return text[start + len(marker) : i - 1].strip()
            start = text.rfind(marker, 0, start)
    return None


def _answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return last_boxed(value) or value.strip()
    return None


def load_rows(source: str, split: str, subset: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs of a ``datasets`` source: a data file (``.jsonl``, ``.json``, ``.parquet``), a folder
    written by ``save_to_disk``, a folder of data files or a hub name."""
    import datasets

    name = os.path.basename(os.path.normpath(source))
    ext = os.path.splitext(source)[1].lower()
    try:
        if os.path.isfile(source) and ext in (".jsonl", ".json", ".parquet"):
            builder = "parquet" if ext == ".parquet" else "json"
            ds = datasets.load_dataset(builder, data_files=source, split="train")
            split = "file"
        elif (saved := load_saved_split(source, split)) is not None:
            ds = saved
        else:
            ds = datasets.load_dataset(source, subset, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; the message names the source
        raise ValueError(f"cannot load {source!r} (split {split!r}): {type(err).__name__}: {err}. With no network, "
                         f"give a local copy (a save_to_disk folder or a data file)") from None
    return [(f"{name}[{split}] row {i}", dict(row)) for i, row in enumerate(ds, start=1)]


def _record(name: str, index: int, where: str, row: dict[str, Any], bench: Benchmark) -> dict[str, Any]:
    question = next((row[f] for f in bench.question_fields if isinstance(row.get(f), str) and row[f].strip()), None)
    if question is None:
        raise ValueError(f"{name}: {where}: no question in any of the fields {list(bench.question_fields)} "
                         f"(fields present: {sorted(row)})")
    answer = next((a for a in (_answer_text(row.get(f)) for f in bench.answer_fields) if a is not None), None)
    if answer is None:
        raise ValueError(f"{name}: {where}: no answer (a string or a number) in any of the fields "
                         f"{list(bench.answer_fields)} (fields present: {sorted(row)})")
    question = question.strip()
    return {
        "id": f"{name}-{index}",
        "problem": question,
        "answer": answer,
        "prompt": [{"role": "user", "content": DAPO_INSTRUCTION.format(problem=question)}],
        "reward_model": {"ground_truth": answer},
        "source": where,
    }


def _generated_rows(task: str, size: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError(f"set {task!r} is generated by reasoning-gym: "
                         f"pip install 'rlvr-lightning[evalsets]'") from None
    try:
        data = reasoning_gym.create_dataset(task, size=size, seed=seed)
    except Exception as err:  # noqa: BLE001 - an unknown task name, bad settings
        raise ValueError(f"reasoning-gym cannot generate {task!r}: {type(err).__name__}: {err}") from None
    return [(f"reasoning-gym {task}[seed {seed}] row {i}", {"question": x["question"], "answer": x["answer"]})
            for i, x in enumerate(data, start=1)]


def prepare(
    name: str, *, source: str | None = None, split: str | None = None, subset: str | None = None,
    limit: int | None = None, generate: bool = False, size: int = 200, seed: int = 0,
) -> list[dict[str, Any]]:
    """The evaluation records of one set.

    Args:
        name: a key of :data:`BENCHMARKS`, or with ``generate`` a reasoning-gym task name (e.g. ``gsm_symbolic``).
        source: a hub name or local copy instead of the benchmark's default.
        split: the split instead of the benchmark's default.
        subset: the hub configuration instead of the benchmark's default.
        limit: keep the first ``limit`` rows.
        generate: generate the set offline with reasoning-gym instead of loading it.
        size: rows generated.
        seed: the generator's seed (the same seed gives the same rows).
    """
    if generate:
        bench, rows = Benchmark(dataset=name), _generated_rows(name, size, seed)
    else:
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {name!r}; valid: {sorted(BENCHMARKS)} (or generate a reasoning-gym "
                             f"task)")
        bench = BENCHMARKS[name]
        rows = load_rows(source or bench.dataset, split or bench.split, subset or bench.subset)
    if not rows:
        raise ValueError(f"{name}: no rows in {source or bench.dataset}")
    return [_record(name, i, where, row, bench) for i, (where, row) in enumerate(rows[:limit])]


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> None:
    """Write ``records`` one JSON object a line (UTF-8), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
