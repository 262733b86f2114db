"""Settings that cannot work are refused by the real ``rlvr fit`` before any model weights are loaded.

Each case runs the CLI in this process on the smoke config with one bad option and checks that the message names the
option and its valid range or choices, and that the policy was never loaded.
"""

from __future__ import annotations

import json

import pytest
from reliability_helpers import CLIError, run_cli

import rlvr_lightning.models


@pytest.fixture
def loads(monkeypatch):
    """Records every model load (the real loader still runs)."""
    calls: list[str] = []
    real = rlvr_lightning.models.load_causal_lm

    def spy(path, **kw):
        calls.append(path)
        return real(path, **kw)

    monkeypatch.setattr(rlvr_lightning.models, "load_causal_lm", spy)
    return calls


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["--model.clip", "PPOClip", "--model.clip.eps_low", "1.0"],
            r"eps_low must be in \[0, 1\), got 1\.0",
        ),
        (
            ["--model.clip", "PPOClip", "--model.clip.eps_low", "-0.1"],
            r"eps_low must be in \[0, 1\), got -0\.1",
        ),
        (
            ["--model.clip", "PPOClip", "--model.clip.eps_high", "-0.2"],
            r"eps_high must be in \[0, inf\), got -0\.2",
        ),
        (
            ["--model.reweight", "PAR", "--model.reweight.lam", "1.5"],
            r"PAR: lam must be in \[0, 1\], got 1\.5",
        ),
        (
            ["--model.reweight", "PAR", "--model.reweight.lam", "-0.5"],
            r"PAR: lam must be in \[0, 1\], got -0\.5",
        ),
        (
            ["--data.num_generations", "1"],
            r"data\.num_generations must be >= 2 with the group-normalized advantage GRPO.*got 1",
        ),
        (
            ["--model.num_mini_batches", "3"],
            r"model\.num_mini_batches=3 must divide .* = 4 / 1 \* 4 = 16; valid values: \[1, 2, 4, 8, 16\]",
        ),
        (
            ["--model.micro_batch_size", "0"],
            r"model\.micro_batch_size must be >= 1 or null, got 0",
        ),
    ],
    ids=[
        "eps_low_1",
        "eps_low_neg",
        "eps_high_neg",
        "lam_high",
        "lam_neg",
        "group_1",
        "mini_batches",
        "micro",
    ],
)
def test_bad_value_refused_before_loading(tmp_path, loads, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        run_cli(tmp_path, *args)
    assert loads == [], "a model was loaded before the configuration was checked"


def test_pass_at_k_larger_than_n_refused(tmp_path, loads):
    eval_set = {
        "name": "aime",
        "files": "assets/arithmetic/val.jsonl",
        "prompt_field": "prompt",
        "k": 2,
        "pass_ks": [1, 4],
    }
    with pytest.raises(ValueError, match=r"eval set 'aime': Pass@k with k=4 .* n=k=2 \(need 1 <= k <= n"):
        run_cli(tmp_path, "--data.eval_sets", json.dumps([eval_set]))
    assert loads == []


@pytest.mark.parametrize("option", ["reweight", "advantage", "clip", "aggregation", "kl", "entropy_bonus"])
def test_unknown_component_lists_valid_names(tmp_path, loads, option):
    with pytest.raises(CLIError) as info:
        run_cli(tmp_path, f"--model.{option}", "NoSuchComponent")
    assert info.value.code == 2
    err = info.value.stderr
    assert f'Parser key "model.{option}"' in err and "NoSuchComponent" in err
    expected = {
        "reweight": ["PAR", "EntropyGuidedPAR", "Uniform"],
        "advantage": ["GRPO", "RLOO", "DrGRPO"],
        "clip": ["PPOClip", "CISPO", "GSPO", "NoClip"],
        "aggregation": ["TokenMean", "SeqMeanTokenSum"],
        "kl": ["KL", "NoKL"],
        "entropy_bonus": ["NoEntropyBonus", "AdaptiveEntropyBonus"],
    }[option]
    line = next(ln for ln in err.splitlines() if f"valid names for model.{option}:" in ln)
    listed = line.split(":", 1)[1].split("(")[0].replace(",", " ").split()
    assert set(expected) <= set(listed)
    assert loads == []


def test_class_of_the_wrong_axis_lists_valid_names(tmp_path):
    with pytest.raises(CLIError) as info:
        run_cli(tmp_path, "--model.reweight", "torch.nn.Linear")
    assert "does not correspond to a subclass of Reweight" in info.value.stderr
    assert "valid names for model.reweight:" in info.value.stderr


def test_missing_model_path_named(tmp_path, loads):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(CLIError) as info:
        run_cli(tmp_path, "--model.model", missing)
    assert info.value.code == 2
    assert f"model.model: model path '{missing}' does not exist" in info.value.stderr
    with pytest.raises(CLIError) as info:
        run_cli(tmp_path, "--model.reference_model", missing)
    assert f"model.reference_model: model path '{missing}' does not exist" in info.value.stderr
    assert loads == []
