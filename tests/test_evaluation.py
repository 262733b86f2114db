"""Evaluation on benchmark sets: EvalSet checks, rank sharding, EvalMetrics against independent references,
``rlvr validate`` with two sets (table and values recomputed from the same samples), and validation during fit."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

from rlvr_lightning.data.evaluation import EvalSet, eval_batches, eval_seed
from rlvr_lightning.metrics import EvalMetrics, format_eval_table
from rlvr_lightning.data.prompts import PromptFormatError, PromptRecord
from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.functional import distinct_n
from rlvr_lightning.metrics import answer_classes

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
MINI = "assets/eval/mini_math.jsonl"
NESTED = "assets/eval/mini_nested.json"


def digit_reward(completions: list[str], answers: list[str], **kw: Any) -> list[float]:
    """1 when the completion holds a digit: a random policy gets a mix of right and wrong."""
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


# ---------------------------------------------------------------------------------------------- EvalSet
def test_eval_set_checks():
    es = EvalSet(name="aime-24", files="a.jsonl", k=8)
    assert es.ks == (1, 8) and es.prompt_field == "problem" and es.temperature == 1.0 and es.top_p == 1.0
    assert EvalSet(name="m", files="a.jsonl", k=4, pass_ks=[4, 2, 2]).ks == (2, 4)
    with pytest.raises(ValueError, match=r"eval set 'm': Pass@k with k=8 .* n=k=4"):
        EvalSet(name="m", files="a.jsonl", k=4, pass_ks=[1, 8])
    with pytest.raises(ValueError, match=r"k \(samples per question\) must be an integer >= 1, got 0"):
        EvalSet(name="m", files="a.jsonl", k=0)
    with pytest.raises(ValueError, match=r"name must match .* got 'a\.b'"):
        EvalSet(name="a.b", files="a.jsonl")
    with pytest.raises(ValueError, match="exactly one of files or dataset"):
        EvalSet(name="m")
    with pytest.raises(ValueError, match="top_p"):
        EvalSet(name="m", files="a.jsonl", top_p=0.0)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        EvalSet(name="m", files="a.jsonl", limit=0)


def _datamodule(**kw: Any):
    from rlvr_lightning.data import RolloutDataModule

    return RolloutDataModule(tokenizer=str(REPO / "assets" / "tiny-qwen2"), max_prompt_length=64, **kw)


def test_eval_sets_load_fields_and_errors():
    sets = [
        EvalSet(name="mini", files=str(REPO / MINI), limit=5),
        EvalSet(
            name="nested",
            files=str(REPO / NESTED),
            prompt_field="question.text",
            answer_field="meta.ground_truth",
        ),
    ]
    dm = _datamodule(val_files=str(REPO / "assets/arithmetic/val.jsonl"), eval_sets=sets)
    assert list(dm.eval_sets) == ["val", "mini", "nested"]
    dm.setup("validate")
    assert len(dm.eval_prompts("mini")) == 5 and dm.eval_prompts("mini")[1].answer == "21"
    assert [r.answer for r in dm.eval_prompts("nested")] == ["4", "56", "23", "19"]  # numbers become strings
    loaders = dm.val_dataloader()
    assert [ld.eval_set.name for ld in loaders] == ["val", "mini", "nested"]
    assert next(iter(loaders[2]))["set"] == "nested"

    bad = _datamodule(eval_sets=[EvalSet(name="mini", files=str(REPO / MINI), prompt_field="question")])
    with pytest.raises(
        PromptFormatError,
        match=r"eval set 'mini': mini_math\.jsonl line 1: missing prompt field "
        r"'question' \(fields present: \['answer', 'problem'\]\)",
    ):
        bad.setup("validate")
    bad = _datamodule(eval_sets=[EvalSet(name="mini", files=str(REPO / MINI), answer_field="solution")])
    with pytest.raises(PromptFormatError, match="missing answer field 'solution'"):
        bad.setup("validate")
    with pytest.raises(ValueError, match="duplicate set name 'val'"):
        _datamodule(val_files=str(REPO / MINI), eval_sets=[EvalSet(name="val", files=str(REPO / MINI))])


def test_eval_batches_pad_ranks_equally():
    recs = [PromptRecord(prompt=f"q{i}", answer=str(i), text=f"q{i}", token_ids=[i + 1]) for i in range(5)]
    one = eval_batches("s", recs, batch_size=2)
    assert [b["answers"] for b in one] == [["0", "1"], ["2", "3"], ["4"]]
    assert all(all(b["valid"]) for b in one)
    r0 = eval_batches("s", recs, batch_size=2, world_size=2, rank=0)
    r1 = eval_batches("s", recs, batch_size=2, world_size=2, rank=1)
    assert [b["answers"] for b in r0] == [["0", "2"], ["4"]]
    assert [b["answers"] for b in r1] == [["1", "3"], ["1"]]  # padded with its first question, marked invalid
    assert [b["valid"] for b in r1] == [[True, True], [False]]
    few = eval_batches(
        "s", recs[:1], batch_size=4, world_size=3, rank=2
    )  # a rank with no question of its own
    assert few[0]["answers"] == ["0"] and few[0]["valid"] == [False]
    assert eval_seed(0, "s", 0) == eval_seed(0, "s", 0)
    assert (
        len({eval_seed(0, "s", 0), eval_seed(0, "s", 1), eval_seed(0, "s", 0, 1), eval_seed(0, "t", 0)}) == 4
    )


# ---------------------------------------------------------------------------------------------- EvalMetrics
def _synthetic(
    num_q: int, k: int, seed: int
) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, list[list[int]]]:
    """A scored batch whose answer labels are known: label j -> text '\\boxed{j}', label -1 -> no answer."""
    g = torch.Generator().manual_seed(seed)
    b, t = num_q * k, 7
    labels = torch.randint(-1, 3, (num_q, k), generator=g)
    texts = [f"so \\boxed{{{int(x)}}}" if x >= 0 else "?" for x in labels.flatten()]
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    batch = RolloutBatch(
        prompt_ids=torch.ones(b, 2, dtype=torch.long),
        prompt_mask=torch.ones(b, 2, dtype=torch.bool),
        response_ids=torch.randint(3, 9, (b, t), generator=g),
        response_mask=mask,
        group_ids=torch.arange(num_q).repeat_interleave(k),
        scores=torch.randint(0, 2, (b,), generator=g).float(),
        truncated=torch.zeros(b, dtype=torch.bool),
        completions=texts,
        prompts=[f"p{i}" for i in range(num_q) for _ in range(k)],
        answers=["1"] * b,
    )
    logp = -torch.rand(b, t, generator=g) * 3
    entropy = torch.rand(b, t, generator=g) * 4
    return batch, logp, entropy, labels.tolist()


def _reference(batch: RolloutBatch, logp, entropy, labels, k: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Naive per-question loops and NumPy/torchmetrics transcriptions of each metric."""
    correct = (batch.scores.numpy() >= 0.5).reshape(-1, k)
    out: dict[str, float] = {f"avg@{k}": float(np.mean(correct.mean(1)))}
    for kk in ks:
        out[f"pass@{kk}"] = float(
            np.mean([1 - math.comb(k - int(c), kk) / math.comb(k, kk) for c in correct.sum(1)])
        )
    maj = []
    for row_labels, row_ok in zip(labels, correct):
        votes = Counter(x for x in row_labels if x >= 0)
        if not votes:
            maj.append(0.0)
            continue
        best = max(votes.values())
        winner = next(x for x in row_labels if x >= 0 and votes[x] == best)  # earliest first sample wins ties
        maj.append(float(row_ok[row_labels.index(winner)]))
    out[f"maj@{k}"] = float(np.mean(maj))
    m = batch.response_mask.numpy()
    out["entropy"] = float(entropy.numpy()[m].mean())
    conf = torch.tensor([math.exp(float(lp[mm].mean())) for lp, mm in zip(logp, batch.response_mask)])
    ok = torch.tensor(correct.flatten())
    out["ece"] = float(binary_calibration_error(conf, ok.long(), n_bins=15))
    out["brier"] = float(((conf.double() - ok.double()) ** 2).mean())
    out["auroc"] = float(binary_auroc(conf, ok.long()))
    out["distinct_2"] = float(
        np.mean([float(distinct_n(batch.completions[q * k : (q + 1) * k], n=2)) for q in range(len(labels))])
    )
    out["distinct_answers"] = float(np.mean([len({x for x in row if x >= 0}) for row in labels]))
    out["response_length"] = float(m.sum(1).mean())
    out["questions"] = float(len(labels))
    return out


def test_eval_metrics_match_references_and_accumulate():
    k, ks = 4, (1, 2, 4)
    batch, logp, entropy, labels = _synthetic(6, k, seed=0)
    ids = torch.stack([answer_classes(batch.completions[q * k : (q + 1) * k]) for q in range(6)])
    assert [[int(i) >= 0 for i in row] for row in ids] == [[x >= 0 for x in row] for row in labels]

    metrics = EvalMetrics(k, ks)
    metrics.update(batch, logp, entropy)
    got = {key: float(v) for key, v in metrics.compute().items()}
    ref = _reference(batch, logp, entropy, labels, k, ks)
    tol = {"auroc": 2e-3}  # the metric bins confidences on a 1e-4 grid
    for key, want in ref.items():
        assert got[key] == pytest.approx(want, abs=tol.get(key, 1e-6)), key
    assert 0 < got[f"avg@{k}"] < 1 and got["pass@4"] > got["pass@1"]
    first_sample = float((batch.scores.view(6, k)[:, 0] >= 0.5).double().mean())
    assert ref[f"maj@{k}"] not in (first_sample, ref[f"avg@{k}"])  # the data tells the vote from shortcuts
    assert [s["correct"] for s in metrics.samples] == (batch.scores >= 0.5).view(6, k).tolist()

    # two updates, the second with a padding question, equal one update of the valid questions
    split = EvalMetrics(k, ks)
    first, second = batch.select(slice(0, 3 * k)), batch.select(slice(3 * k, 6 * k))
    second.group_ids = second.group_ids - 3
    split.update(first, logp[: 3 * k], entropy[: 3 * k])
    split.update(second, logp[3 * k :], entropy[3 * k :], valid=torch.tensor([True, False, True]))
    keep = [q for q in range(6) if q != 4]
    rows = torch.tensor([q * k + j for q in keep for j in range(k)])
    want_batch = batch.select(rows)
    want_batch.group_ids = torch.arange(5).repeat_interleave(k)
    once = EvalMetrics(k, ks)
    once.update(want_batch, logp[rows], entropy[rows])
    a, b = split.compute(), once.compute()
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-9), key
    split.reset()
    assert split.samples == [] and split.accuracy.update_count == 0

    with pytest.raises(ValueError, match=r"needs exactly 4 responses for each question"):
        EvalMetrics(k, ks).update(batch.select(slice(0, 7)), logp[:7], entropy[:7])
    with pytest.raises(ValueError, match=r"1 <= k <= n; got ks=\(1, 8\) with n=4"):
        EvalMetrics(4, (1, 8))


def test_format_eval_table():
    table = format_eval_table(
        {
            "aime": {
                "avg@4": 0.25,
                "avg@4_ci_low": 0.125,
                "avg@4_ci_high": 0.375,
                "pass@4": 0.5,
                "maj@4": 0.0,
                "entropy": 1.5,
                "distinct_2": 0.75,
                "self_bleu": float("nan"),
                "ece": 0.1,
                "auroc": 0.6,
            }
        },
        {"aime": 4},
        {"aime": 30},
    )
    header, _, row = table.splitlines()
    assert header.split() == [
        "set",
        "questions",
        "k",
        "Avg@k",
        "Avg@k-CI",
        "Pass@k",
        "Maj@k",
        "entropy",
        "distinct-2",
        "self-BLEU",
        "ECE",
        "AUROC",
    ]
    assert row.split() == [
        "aime",
        "30",
        "4",
        "0.2500",
        "0.125-0.375",
        "0.5000",
        "0.0000",
        "1.5000",
        "0.7500",
        "-",
        "0.1000",
        "0.6000",
    ]


# ---------------------------------------------------------------------------------------------- CLI runs
def _cli(tmp_path: Path, command: str, *extra: str):
    from rlvr_lightning.cli import cli_main

    cwd = os.getcwd()
    os.chdir(REPO)  # the smoke config names assets/ relative to the repository
    try:
        return cli_main(
            [
                command,
                "--config",
                SMOKE,
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--trainer.logger.init_args.name",
                "eval",
                "--data.rewards",
                "test_evaluation.digit_reward",
                "--data.max_new_tokens",
                "6",
                "--data.val_files",
                "null",
                *extra,
            ]
        )
    finally:
        os.chdir(cwd)


TWO_SETS = json.dumps(
    [
        {"name": "mini", "files": MINI, "k": 3, "pass_ks": [1, 2, 3], "limit": 6, "batch_size": 4},
        {
            "name": "nested",
            "files": NESTED,
            "prompt_field": "question.text",
            "answer_field": "meta.ground_truth",
            "k": 2,
        },
    ]
)


def test_validate_two_sets_table_and_independent_values(tmp_path, capsys):
    cli = _cli(tmp_path, "validate", "--data.eval_sets", TWO_SETS)
    out = capsys.readouterr().out
    lines = out[out.index("\nvalidation\n") + 1 :].splitlines()
    assert lines[1].split()[:7] == ["set", "questions", "k", "Avg@k", "Avg@k-CI", "Pass@k", "Maj@k"]
    assert lines[3].split()[:3] == ["mini", "6", "3"] and lines[4].split()[:3] == ["nested", "4", "2"]
    assert "Validate metric" in out and "val/nested/pass@2" in out  # Lightning's own table

    dm, module = cli.datamodule, cli.model
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    mixed = False
    for loader in dm.val_dataloader():
        es = loader.eval_set
        # the same draws again (fixed seeds, unchanged weights); correctness from the reward itself
        rows, maj = [], []
        for batch_idx, batch in enumerate(loader):
            prompts = [
                {"prompt": t, "prompt_ids": i, "answer": a}
                for t, i, a in zip(batch["prompts"], batch["prompt_ids"], batch["answers"])
            ]
            again = dm.rollout(
                prompts, n=es.k, seed=dm.eval_seed(es.name, batch_idx), temperature=1.0, top_p=1.0
            )
            ok = [s >= 0.5 for s in digit_reward(again.completions, again.answers)]
            for q in range(len(prompts)):
                row = ok[q * es.k : (q + 1) * es.k]
                rows.append(row)
                ids = answer_classes(again.completions[q * es.k : (q + 1) * es.k]).tolist()
                votes = Counter(x for x in ids if x >= 0)  # Maj@k by a naive vote over the answer classes
                winner = next((x for x in ids if x >= 0 and votes[x] == max(votes.values())), None)
                maj.append(False if winner is None else row[ids.index(winner)])
        samples = module.last_eval[es.name]["samples"]
        assert [s["correct"] for s in samples] == rows
        c = np.array([sum(row) for row in rows])
        mixed |= bool(0 < c.sum() < c.size * es.k)
        assert logged[f"val/{es.name}/avg@{es.k}"] == pytest.approx(np.mean(c / es.k), abs=1e-6)
        for kk in es.ks:
            want = np.mean([1 - math.comb(es.k - int(ci), kk) / math.comb(es.k, kk) for ci in c])
            assert logged[f"val/{es.name}/pass@{kk}"] == pytest.approx(want, abs=1e-6)
        assert logged[f"val/{es.name}/maj@{es.k}"] == pytest.approx(np.mean(maj), abs=1e-6)
        assert logged[f"val/{es.name}/questions"] == len(c)
    assert mixed, "the toy reward should give a mix of right and wrong answers"


def test_cli_refuses_k_larger_than_n(tmp_path):
    bad = json.dumps([{"name": "mini", "files": MINI, "k": 2, "pass_ks": [1, 4]}])
    with pytest.raises(
        ValueError,
        match=r"eval set 'mini': Pass@k with k=4 needs at least k samples per "
        r"question, but n=k=2",
    ):
        _cli(tmp_path, "validate", "--data.eval_sets", bad)


def test_validation_during_fit_logs_val_keys(tmp_path, capsys):
    sets = json.dumps([{"name": "mini", "files": MINI, "k": 2, "limit": 2}])
    _cli(
        tmp_path,
        "fit",
        "--data.eval_sets",
        sets,
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "1",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--checkpoint.every_n_train_steps",
        "0",
    )
    (path,) = tmp_path.glob("eval/version_*/metrics.csv")
    rows = list(csv.DictReader(path.open()))
    for key in (
        "avg@2",
        "pass@1",
        "pass@2",
        "maj@2",
        "entropy",
        "distinct_2",
        "self_bleu",
        "ece",
        "brier",
        "auroc",
    ):
        assert f"val/mini/{key}" in rows[0], key
    val_rows = [r for r in rows if r["val/mini/avg@2"]]
    assert len(val_rows) == 2  # after each of the two rollout batches
    assert "\nvalidation at step 2\n" in capsys.readouterr().out
    assert all(r["train/loss"] == "" for r in val_rows) and any(r["train/loss"] for r in rows)


def test_rlvr_test_evaluates_the_same_sets_under_test_keys(tmp_path, capsys):
    val = _cli(tmp_path, "validate", "--data.eval_sets", TWO_SETS).trainer.callback_metrics
    test = _cli(tmp_path, "test", "--data.eval_sets", TWO_SETS).trainer.callback_metrics
    assert "\ntest\n" in capsys.readouterr().out
    keys = [k for k in val if k.startswith("val/")]
    assert keys and all(float(test["test/" + k[4:]]) == float(val[k]) for k in keys)
