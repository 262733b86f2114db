"""``rlvr export``: a checkpoint's policy as a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained``
loads with the checkpoint's log-probs (LoRA merged)."""

from __future__ import annotations

import json

import pytest
import torch
from toy_training import REPO, SMOKE_LORA, fit, initial_policy, random_batch, response_logprobs
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr_lightning.cli import main


def _export(ckpt, out, *extra: str):
    assert main(["export", str(ckpt), str(out), *extra]) == 0
    return AutoModelForCausalLM.from_pretrained(out)


def test_export_of_a_lora_checkpoint_is_the_merged_model(tmp_path):
    pytest.importorskip("peft")
    cli = fit(tmp_path, "--trainer.max_steps", "2", config=SMOKE_LORA)
    ckpt = next(tmp_path.rglob("last.ckpt"))
    model = _export(ckpt, tmp_path / "hf")
    assert type(model).__name__ == "Qwen2ForCausalLM" and not any("lora" in k for k in model.state_dict())
    batch = random_batch()
    exported, adapted = response_logprobs(model, batch), response_logprobs(cli.model.policy, batch)
    assert float((exported - adapted).abs().max()) <= 1e-5
    assert float((adapted - response_logprobs(initial_policy(), batch)).abs().max()) > 1e-4  # the adapters trained
    tok, original = AutoTokenizer.from_pretrained(tmp_path / "hf"), AutoTokenizer.from_pretrained(
        REPO / "assets" / "tiny-qwen2")
    assert tok("12+34=46")["input_ids"] == original("12+34=46")["input_ids"]
    assert (tok.eos_token, tok.pad_token) == (original.eos_token, original.pad_token)
    meta = json.loads((tmp_path / "hf" / "rlvr_export.json").read_text())
    assert meta["lora"]["rank"] == 2 and meta["global_step"] == 2 and meta["rollout_step"] == 2


def test_export_of_a_full_checkpoint_reproduces_its_logprobs(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps", "2")
    ckpt = next(tmp_path.rglob("last.ckpt"))
    # the checkpoint's policy, loaded by hand: independent of the export code
    saved = initial_policy()
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    saved.load_state_dict({k.removeprefix("policy."): v for k, v in state.items()})
    batch = random_batch()
    expected = response_logprobs(saved, batch)
    assert torch.equal(expected, response_logprobs(cli.model.policy, batch))  # last.ckpt is the end of the run
    assert float((expected - response_logprobs(initial_policy(), batch)).abs().max()) > 1e-4
    model = _export(ckpt, tmp_path / "hf")
    assert float((response_logprobs(model, batch) - expected).abs().max()) <= 1e-6
    half = _export(ckpt, tmp_path / "bf16", "--dtype", "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    # bf16 rounding of the weights only (2e-3 measured for the untrained model's weights cast the same way)
    assert float((response_logprobs(half.float(), batch) - expected).abs().max()) < 1e-2


def test_export_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        main(["export", str(missing), str(tmp_path / "out")])
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="other.ckpt.*hyper_parameters.*not a checkpoint written by `rlvr fit`"):
        main(["export", str(other), str(tmp_path / "out")])
