"""A user's own run through the CLI: ``rlvr fit --config configs/quickstart.yaml --model.model DIR --data.train_files
FILE --data.prompt_field F --data.answer_field A`` with a model folder and data files (JSONL, Parquet) that the test
makes, field names of its own, and duplicate prompts. The model path reaches the policy, the reference, the
tokenizer and the engine; a file given on the command line replaces a dataset named in the config."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from toy_training import REPO

from rlvr_lightning.cli import cli_main, prefer_command_line_sources
from rlvr_lightning.data import HFEngine

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
FAST = ["--trainer.max_steps", "2", "--data.prompts_per_step", "4", "--data.num_generations", "2",
        "--data.max_new_tokens", "8", "--model.micro_batch_size", "4", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A normal model folder: weights (a seeded random init of the tiny Qwen2), config and tokenizer files."""
    from rlvr_lightning.models import load_causal_lm

    out = tmp_path_factory.mktemp("my-model")
    load_causal_lm(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, seed=3).save_pretrained(out)
    for f in (REPO / "assets" / "tiny-qwen2").iterdir():
        if f.name != "config.json":
            shutil.copy(f, out / f.name)
    return out


def problems(n: int) -> list[dict]:
    return [{"problem": f"{i}+{i}=", "solution": str(2 * i), "id": i} for i in range(n)]


def metrics(save_dir: Path) -> list[dict]:
    rows = [r for p in save_dir.rglob("metrics.csv") for r in csv.DictReader(open(p))]
    return [r for r in rows if r.get("train/reward_mean")]


def test_quickstart_with_a_model_folder_and_field_names_of_ones_own(tmp_path, model_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names repository paths
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems(10) + problems(3)))  # 3 duplicate prompts
    cli = cli_main(["fit", "--config", QUICKSTART, "--model.model", str(model_dir), "--data.train_files", str(data),
                    "--data.prompt_field", "problem", "--data.answer_field", "solution",
                    "--model.kl", "KL",  # a KL term: the reference is loaded too
                    "--data.rewards", "toy_training.digit_reward",  # signal for a random model: it learns
                    "--trainer.logger.init_args.save_dir", str(tmp_path), *FAST])
    assert len(metrics(tmp_path)) == 2
    model, dm = cli.model, cli.datamodule
    assert model.policy.config._name_or_path == str(model_dir)  # loaded from the folder's weights
    assert model.reference_path == str(model_dir)
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / "model.safetensors"))
    reference = model.reference.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in saved.items())
    assert any(not torch.equal(p.detach(), saved[k]) for k, p in model.policy.named_parameters() if k in saved)
    assert dm.tokenizer.name_or_path == str(model_dir)
    assert isinstance(dm.engine, HFEngine) and dm.engine.model is model.policy  # chosen on a CPU machine
    assert len(dm.train_prompts) == 10 and dm.num_duplicate_prompts == 3
    assert dm.train_prompts[0].answer == "0" and dm.train_prompts[0].fields["id"] == 0


def test_a_file_on_the_command_line_replaces_the_dataset_of_the_config(tmp_path, model_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names repository paths
    config = yaml.safe_load(open(QUICKSTART))
    config["data"].update(train_dataset="BytedTsinghua-SIA/DAPO-Math-17k", prompt_field="prompt")
    (tmp_path / "with_dataset.yaml").write_text(yaml.safe_dump(config))
    rows = [{"q": r["problem"], "a": int(r["solution"])} for r in problems(8)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine.parquet")
    args = ["fit", "--config", str(tmp_path / "with_dataset.yaml"), "--model.model", str(model_dir),
            "--data.train_files", str(tmp_path / "mine.parquet"), "--data.prompt_field", "q",
            "--data.answer_field", "a", "--trainer.logger.init_args.save_dir", str(tmp_path), *FAST]
    cli = cli_main(args)
    assert len(metrics(tmp_path)) == 2 and cli.datamodule.train_source.dataset is None
    assert [r.answer for r in cli.datamodule.train_prompts] == [str(2 * i) for i in range(8)]
    # the last source on the command line wins
    later = cli_main([*args[1:], "--data.train_dataset", "some/dataset"], run=False).datamodule.train_source
    assert (later.files, later.dataset) == (None, "some/dataset")


def test_prefer_command_line_sources():
    assert prefer_command_line_sources(["--config", "c.yaml", "--data.train_files", "f.jsonl", "--x", "1"]) == [
        "--config", "c.yaml", "--data.train_files", "f.jsonl", "--data.train_dataset=null", "--x", "1"]
    assert prefer_command_line_sources(["--data.val_dataset=d", "--data.train_files+", "g.jsonl"]) == [
        "--data.val_dataset=d", "--data.val_files=null", "--data.train_files+", "g.jsonl",
        "--data.train_dataset=null"]
    assert prefer_command_line_sources(["--data.train_split", "test"]) == ["--data.train_split", "test"]


def test_a_vllm_engine_starts_from_the_policy_path(tmp_path, model_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names repository paths
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems(4)))
    base = ["--config", QUICKSTART, "--model.model", str(model_dir), "--data.train_files", str(data),
            "--data.engine", "rlvr_lightning.data.vllm_engine.VLLMEngine"]
    cli = cli_main(base, run=False)
    engine = cli.datamodule.engine
    assert engine.model is None
    cli.datamodule._ensure_ready()  # what the first rollout does: no vLLM started here
    assert engine.model == str(model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli_main([*base, "--data.engine.model", "/models/other"], run=False)
    assert any("differs from model.model" in str(w.message) for w in caught)
