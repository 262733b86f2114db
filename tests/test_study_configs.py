"""The study configs parse, and a couple of steps of each run with the entropy probe and the diversity logs."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STUDY = sorted((REPO / "configs" / "study").glob("*.yaml"))
CONDITIONS = {"grpo", "positive_only", "negative_only", "clip_higher", "clip_lower", "offpolicy_n4", "low_diversity",
              "par_constant", "par_entropy"}


def test_there_is_a_study_config_per_condition():
    assert {p.stem for p in STUDY} == CONDITIONS


@pytest.mark.parametrize("path", STUDY, ids=[p.stem for p in STUDY])
def test_study_config_parses_and_names_its_run(path, monkeypatch):
    from rlvr_lightning.cli import cli_main

    monkeypatch.chdir(REPO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None), out.getvalue()
    cfg = yaml.safe_load(out.getvalue())
    assert cfg["trainer"]["logger"]["init_args"]["save_dir"] == "runs/study"
    assert cfg["trainer"]["logger"]["init_args"]["name"] == path.stem
    assert cfg["data"]["rewards"] == ["rlvr_lightning.study_task.sum_reward"]


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_study_config_runs_a_few_steps_with_the_probe(name, tmp_path, monkeypatch):
    """A random-init model stands in for runs/study-model (rewards are then mostly 0; the plumbing is the point)."""
    from rlvr_lightning.cli import cli_main

    cfg = yaml.safe_load((REPO / "configs" / "study" / f"{name}.yaml").read_text())
    n_updates = cfg["model"]["num_mini_batches"] * cfg["model"].get("ppo_epochs", 1)
    monkeypatch.chdir(REPO)
    cli_main(["fit", "--config", f"configs/study/{name}.yaml", "--model.model", "assets/tiny-qwen2",
              "--model.from_scratch", "true", "--trainer.max_steps", str(2 * n_updates),
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--model.entropy_probe_every", "1",
              "--data.prompts_per_step", "4", "--seed_everything", "1", "--checkpoint.dirpath",
              str(tmp_path / "ckpt")])
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    probed = [r for r in rows if r.get("train/entropy_change_measured")]
    assert len(probed) == 2
    for r in probed:
        for key in ("train/distinct_correct", "train/distinct_responses", "train/ece"):
            assert 0 <= float(r[key]) <= (8 if key.startswith("train/distinct") else 1), (key, r[key])
        for key in ("train/entropy_change_predicted", "train/entropy_drive_pos", "train/entropy_drive_neg"):
            assert r[key] != ""


@pytest.mark.parametrize("name", ["grpo", "par"])
def test_demo_config_trains_validates_and_summarizes(name, tmp_path, monkeypatch):
    """The two demo runs, cut to 2 rollout batches with a validation after each, from a random-init model; the
    summary script reads what they log."""
    import importlib.util

    from rlvr_lightning.cli import cli_main

    cfg = yaml.safe_load((REPO / "configs" / "demo" / f"{name}.yaml").read_text())
    assert cfg["trainer"]["logger"]["init_args"]["name"] == name  # the plot's legend is the run folder's name
    assert cfg["data"]["train_files"] == "assets/study/rl/demo_train.jsonl"
    monkeypatch.chdir(REPO)
    cli_main(["fit", "--config", f"configs/demo/{name}.yaml", "--model.model", "assets/tiny-qwen2",
              "--model.from_scratch", "true", "--trainer.max_steps", "4", "--trainer.val_check_interval", "1",
              "--trainer.check_val_every_n_epoch", "null",
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.prompts_per_step", "4",
              "--checkpoint.dirpath", str(tmp_path / "ckpt")])
    spec = importlib.util.spec_from_file_location("demo_summary", REPO / "scripts" / "demo_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    s = summary.summarize(str(tmp_path / name))
    assert s["evals"] == 2 and 0.0 <= s["val_first"] <= 1.0 and 0.0 <= s["val_last"] <= 1.0
    assert s["entropy_first"] > 0.0
    assert (0.0 <= s["lambda_last"] <= 1.0) if name == "par" else s["lambda_last"] != s["lambda_last"]  # NaN


def test_demo_prompts_are_held_out():
    rows = {p: [yaml.safe_load(line)["prompt"] for line in (REPO / "assets/study/rl" / p).read_text().splitlines()]
            for p in ("demo_train.jsonl", "demo_val.jsonl")}
    assert not set(rows["demo_train.jsonl"]) & set(rows["demo_val.jsonl"])
    assert len(rows["demo_train.jsonl"]) + len(rows["demo_val.jsonl"]) == 161
