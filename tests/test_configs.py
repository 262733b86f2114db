"""Every top-level config parses with ``rlvr fit --config F --print_config``; par.yaml selects PAR, vLLM, FSDP2."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def print_config(path: Path) -> dict:
    from rlvr_lightning.cli import cli_main

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            cli_main(["fit", "--config", str(path), "--print_config"])
    finally:
        os.chdir(cwd)
    assert exit_info.value.code in (0, None), out.getvalue()
    return yaml.safe_load(out.getvalue())


def test_there_is_a_config_per_experiment():
    names = {p.stem for p in CONFIGS}
    expected = {"par", "grpo", "smoke", "clip_higher", "clip_lower", "clip_tighter", "clip_free",
                "offpolicy_n2", "offpolicy_n4", "entropy_bonus", "adaptive_entropy", "clip_cov", "kl_cov",
                "positive_only", "negative_only", "par_constant", "par_stage", "par_epoch"}
    assert expected <= names, expected - names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path):
    cfg = print_config(path)
    assert cfg["model"]["model"]
    for axis in ("advantage", "clip", "reweight", "aggregation", "kl", "entropy_bonus"):
        assert "class_path" in cfg["model"][axis], axis


def test_par_selects_entropy_guided_par_vllm_and_fsdp2():
    cfg = print_config(REPO / "configs" / "par.yaml")
    assert cfg["model"]["reweight"]["class_path"].endswith("EntropyGuidedPAR")
    assert cfg["model"]["reweight"]["init_args"] == {"delta": 0.2, "step": 0.05, "lam0": 0.0}
    assert cfg["data"]["engine"]["class_path"].endswith("VLLMEngine")
    assert cfg["trainer"]["strategy"]["class_path"].endswith("ModelParallelStrategy")
    assert cfg["model"]["kl"]["class_path"].endswith("NoKL")
    assert cfg["model"]["aggregation"]["class_path"].endswith("TokenMean")


@pytest.mark.parametrize("name,n", [("grpo", 1), ("offpolicy_n2", 2), ("offpolicy_n4", 4)])
def test_off_policy_configs_set_n_updates_per_rollout_batch(name, n):
    cfg = print_config(REPO / "configs" / f"{name}.yaml")
    assert cfg["model"]["ppo_epochs"] * cfg["model"]["num_mini_batches"] == n
    assert cfg["trainer"]["max_steps"] == 500 * n


def test_smoke_lora_is_the_smoke_run_with_adapters():
    smoke, lora = print_config(REPO / "configs" / "smoke.yaml"), print_config(REPO / "configs" / "smoke_lora.yaml")
    assert smoke["model"].pop("lora") is None
    assert lora["model"].pop("lora") == {"rank": 2, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear"}
    for cfg in (smoke, lora):
        cfg["trainer"].pop("logger")  # runs/smoke vs runs/smoke_lora
    assert lora == smoke


GPU_RECIPES = [p for p in CONFIGS if "VLLMEngine" in p.read_text()]


@pytest.mark.parametrize("path", GPU_RECIPES, ids=[p.stem for p in GPU_RECIPES])
def test_vllm_engines_start_from_the_policy_path(path):
    """No recipe names a model for its engine: it takes ``model.model`` (through the tokenizer path)."""
    cfg = print_config(path)
    assert cfg["data"]["engine"]["init_args"]["model"] is None
    assert cfg["data"]["engine"]["init_args"]["enable_sleep_mode"] is True


def test_getting_started_configs():
    quick = print_config(REPO / "configs" / "quickstart.yaml")
    assert quick["data"]["engine"] == "auto" and quick["trainer"]["accelerator"] == "auto"
    assert quick["data"]["train_files"] is None and quick["data"]["train_dataset"] is None
    one = print_config(REPO / "configs" / "one_gpu.yaml")
    assert one["trainer"]["devices"] == 1 and one["model"]["reweight"]["class_path"].endswith("EntropyGuidedPAR")
    assert one["model"]["advantage"]["class_path"].endswith("GRPO") and one["model"]["fsdp_param_dtype"] == "bfloat16"
    smol = print_config(REPO / "configs" / "smollm2_cpu.yaml")
    assert smol["trainer"]["accelerator"] == "cpu" and smol["data"]["prompt_field"] == "question"
    assert smol["model"]["reweight"]["class_path"].endswith("Uniform")
