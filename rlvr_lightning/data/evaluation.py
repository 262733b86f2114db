"""Benchmark sets for evaluation: what to load (AIME, MATH500, AMC, Minerva, ...) and how to sample it.

An :class:`EvalSet` names a benchmark, where its questions are (local JSONL / JSON / Parquet files or a
``datasets`` source, with configurable, possibly nested, field names) and how it is evaluated: ``k`` samples per
question at temperature 1.0 and top-p 1.0 by default (the paper's Avg@64 / Pass@64 setting with ``k: 64``). The
``RolloutDataModule`` turns each set into one validation dataloader of question batches (:func:`eval_batches`);
``RLVRModule.validation_step`` samples and scores them, and :class:`rlvr_lightning.metrics.EvalMetrics` measures
them (Avg@k, Pass@k, Maj@k, entropy, diversity, calibration).

Usual shapes of the public benchmark files (set the fields accordingly)::

    MATH500   {"problem": ..., "answer": ..., "solution": ...}     prompt_field: problem
    AIME      {"problem": ..., "answer": ...} or {"question": ..., "answer": ...}
    AMC       {"problem": ..., "answer": 42.0}                      numbers become strings ("42.0")
    Minerva   {"problem": ..., "solution": ...}                     answer_field: solution (math-verify
                                                                    extracts the boxed answer from it)
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rlvr_lightning.data.prompts import PromptFormat, PromptRecord, PromptSource, format_prompts
from rlvr_lightning.data.schedule import mix_seed

__all__ = [
    "EvalLoader",
    "EvalSet",
    "eval_batches",
    "eval_loaders",
    "eval_seed",
    "load_eval_set",
    "named_eval_sets",
]

_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class EvalSet:
    """One benchmark set and its evaluation settings.

    Args:
        name: short name used in metric keys (``val/<name>/pass@<k>``): letters, digits, ``_`` and ``-``.
        files: local file(s) (``.jsonl``, ``.json`` list of objects, ``.parquet``).
        dataset: a ``datasets`` name or local dataset directory (instead of ``files``).
        split: the split of ``dataset``.
        prompt_field: the question's field (``a.b`` for nested fields).
        answer_field: the reference answer's field.
        prompt_template: ``str.format`` template of the user text over the record's fields (``{prompt}`` is the
            question), e.g. ``"{prompt}\\nPut the final answer in \\\\boxed{{}}."``; None: the DataModule's
            ``prompt_template``.
        k: samples per question, the k of Avg@k and Maj@k (the paper: 64).
        pass_ks: the k values of Pass@k, each ``1 <= k' <= k`` (None: ``[1, k]``).
        temperature: sampling temperature (the paper: 1.0; 0 is greedy).
        top_p: nucleus mass (the paper: 1.0).
        top_k: top-k (``-1``: off).
        max_new_tokens: response length cap (None: the DataModule's ``max_new_tokens``).
        limit: evaluate only the first ``limit`` questions (None: all).
        batch_size: questions per validation batch (None: the DataModule's ``val_batch_size``).
        bootstrap_resamples: resamples of the percentile bootstrap confidence interval of Avg@k over the questions
            (``val/<name>/avg@<k>_ci_low`` / ``_ci_high``); 0: no interval.
        confidence_level: that interval's confidence level, in (0, 1).
    """

    name: str
    files: str | list[str] | None = None
    dataset: str | None = None
    split: str = "test"
    prompt_field: str = "problem"
    answer_field: str = "answer"
    prompt_template: str | None = None
    k: int = 4
    pass_ks: list[int] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int | None = None
    limit: int | None = None
    batch_size: int | None = None
    bootstrap_resamples: int = 1000
    confidence_level: float = 0.95

    def __post_init__(self) -> None:
        where = f"eval set {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"eval set name must match [A-Za-z0-9_-]+ (it is part of metric keys), got {self.name!r}"
            )
        if (self.files is None) == (self.dataset is None):
            raise ValueError(
                f"{where}: give exactly one of files or dataset (val_files or val_dataset for 'val')"
            )
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"{where}: k (samples per question) must be an integer >= 1, got {self.k!r}")
        for kk in self.ks:
            if not isinstance(kk, int) or isinstance(kk, bool) or kk < 1:
                raise ValueError(f"{where}: pass_ks must hold integers >= 1, got {self.pass_ks!r}")
            if kk > self.k:
                raise ValueError(
                    f"{where}: Pass@k with k={kk} needs at least k samples per question, but n=k={self.k} "
                    f"(need 1 <= k <= n; raise k or drop {kk} from pass_ks)"
                )
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"{where}: need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}"
            )
        if not isinstance(self.bootstrap_resamples, int) or self.bootstrap_resamples < 0:
            raise ValueError(f"{where}: bootstrap_resamples must be an integer >= 0, got {self.bootstrap_resamples!r}")
        if not 0 < self.confidence_level < 1:
            raise ValueError(f"{where}: confidence_level must be in (0, 1), got {self.confidence_level}")
        for field_name in ("max_new_tokens", "limit", "batch_size"):
            value = getattr(self, field_name)
            if value is not None and value < 1:
                raise ValueError(f"{where}: {field_name} must be >= 1 or null, got {value}")

    @property
    def source(self) -> PromptSource:
        """Where the set's questions are and which fields hold what."""
        return PromptSource(self.files, self.dataset, self.split, self.prompt_field, self.answer_field)

    @property
    def ks(self) -> tuple[int, ...]:
        """The sorted, distinct k values of Pass@k."""
        return tuple(sorted(set([1, self.k] if self.pass_ks is None else self.pass_ks)))


def named_eval_sets(val: PromptSource, k: int, extra: list[EvalSet]) -> dict[str, EvalSet]:
    """The evaluation sets by name: ``"val"`` from ``val`` (the DataModule's ``val_files`` / ``val_dataset``, with
    ``k`` samples per question) when given, then ``extra``; duplicate names are refused."""
    sets: dict[str, EvalSet] = {}
    if val.given:
        sets["val"] = EvalSet(name="val", files=val.files, dataset=val.dataset, split=val.split,
                              prompt_field=val.prompt_field, answer_field=val.answer_field, k=k)
    for es in extra:
        if not isinstance(es, EvalSet):
            raise TypeError(f"eval_sets entries must be EvalSet, got {type(es).__name__}")
        if es.name in sets:
            reason = " (the name of the val_files set)" if es.name == "val" else ""
            raise ValueError(f"eval_sets: duplicate set name {es.name!r}{reason}")
        sets[es.name] = es
    return sets


def load_eval_set(
    eval_set: EvalSet, tokenizer: Any, fmt: PromptFormat | None = None, **options: Any
) -> tuple[list[PromptRecord], int]:
    """Read, cut to ``limit`` and format the questions of ``eval_set``.

    Args:
        eval_set: the set.
        tokenizer: a Hugging Face tokenizer.
        fmt: the format of the DataModule, whose prompt template is used when the set has none (None:
            ``PromptFormat(**options)``).
        **options: the fields of :class:`~rlvr_lightning.data.prompts.PromptFormat`, when ``fmt`` is None.

    Returns:
        ``(formatted records, number dropped for length)``.
    """
    fmt = PromptFormat(**options) if fmt is None else fmt
    try:
        records = eval_set.source.load()
    except ValueError as e:
        raise type(e)(f"eval set {eval_set.name!r}: {e}") from None
    if eval_set.limit is not None:
        records = records[: eval_set.limit]
    return format_prompts(records, tokenizer, fmt.with_template(eval_set.prompt_template))


def eval_batches(
    name: str, records: list[PromptRecord], *, batch_size: int, world_size: int = 1, rank: int = 0
) -> list[dict[str, Any]]:
    """This rank's questions of one set in batches ``{"set", "prompts", "prompt_ids", "answers", "valid"}``.

    Questions are dealt to ranks by index modulo ``world_size``. With several ranks every rank gets the same
    number of questions (and so the same batches, which sharded models need: each forward is collective): a
    rank short of questions repeats its first one (or the set's first) with ``valid`` False, and the evaluation
    leaves those out.

    Args:
        name: the set's name.
        records: the formatted questions.
        batch_size: questions per batch.
        world_size: number of ranks.
        rank: this rank.
    """
    mine = records[rank::world_size]
    valid = [True] * len(mine)
    if world_size > 1:
        per_rank = -(-len(records) // world_size)
        filler = mine[0] if mine else records[0]
        mine = mine + [filler] * (per_rank - len(mine))
        valid = valid + [False] * (per_rank - len(valid))
    out = []
    for i in range(0, len(mine), batch_size):
        chunk = mine[i : i + batch_size]
        out.append(
            {
                "set": name,
                "prompts": [r.text for r in chunk],
                "prompt_ids": [r.token_ids for r in chunk],
                "answers": [r.answer for r in chunk],
                "valid": valid[i : i + batch_size],
            }
        )
    return out


class EvalLoader(Sequence):
    """The validation batches of one set: a sized iterable that Lightning takes as one dataloader.

    (A plain list would be read by Lightning as a collection of dataloaders.)

    Attributes:
        eval_set: the set.
        num_questions: questions of the set on all ranks (padding excluded).
    """

    def __init__(self, eval_set: EvalSet, batches: list[dict[str, Any]], num_questions: int) -> None:
        self.eval_set = eval_set
        self.batches = batches
        self.num_questions = num_questions

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: Any) -> Any:
        return self.batches[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def __repr__(self) -> str:
        return f"EvalLoader({self.eval_set.name!r}, {len(self.batches)} batches)"


def eval_loaders(sets: dict[str, EvalSet], prompts_of: Callable[[str], list[PromptRecord]], default_batch_size: int,
                 world_size: int, rank: int) -> list[EvalLoader]:
    """One :class:`EvalLoader` per set of ``sets`` over this rank's share of its questions (``prompts_of(name)``),
    in batches of the set's ``batch_size`` (else ``default_batch_size``)."""
    loaders = []
    for name, es in sets.items():
        records = prompts_of(name)
        batches = eval_batches(name, records, batch_size=es.batch_size or default_batch_size,
                               world_size=world_size, rank=rank)
        loaders.append(EvalLoader(es, batches, len(records)))
    return loaders


def eval_seed(seed: int, name: str, batch_idx: int, rank: int = 0) -> int:
    """The engine seed of one validation batch: fixed across validations, so checkpoints see the same draws."""
    return mix_seed(seed, zlib.crc32(name.encode()), batch_idx, rank)
