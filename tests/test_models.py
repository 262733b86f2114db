"""Tests of model and tokenizer loading, the tiny offline assets, and the demo model's supervised warm-up."""

from __future__ import annotations

import importlib.util
import json
import shutil
import string
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from rlvr_lightning.models import freeze, load_causal_lm, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "assets" / "tiny-qwen2"
DATA = ROOT / "assets" / "arithmetic"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_from_scratch_shapes():
    model = load_causal_lm(str(TINY), from_scratch=True)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (128, 4, 4, 2)
    assert cfg.hidden_size // cfg.num_attention_heads >= 32  # the CPU vLLM backend's minimum head dimension
    assert model.dtype == torch.float32 and model.training
    ids = torch.randint(cfg.vocab_size, (3, 11))
    assert model(input_ids=ids).logits.shape == (3, 11, cfg.vocab_size)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_from_scratch_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = load_causal_lm(str(TINY), from_scratch=True, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    b = load_causal_lm(str(TINY), from_scratch=True, seed=3)
    c = load_causal_lm(str(TINY), from_scratch=True, seed=4)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_save_load_round_trip(tmp_path):
    model = load_causal_lm(str(TINY), from_scratch=True, seed=1)
    model.save_pretrained(tmp_path)
    load_tokenizer(str(TINY)).save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    loaded = load_causal_lm(str(tmp_path))
    assert _same_weights(model, loaded)
    ids = torch.randint(model.config.vocab_size, (2, 7))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    half = load_causal_lm(str(tmp_path), dtype="bfloat16", attn_implementation="eager", gradient_checkpointing=True)
    checkpointing = getattr(half, "is_activation_checkpointing", None)
    assert half.dtype == torch.bfloat16
    assert checkpointing if checkpointing is not None else half.is_gradient_checkpointing
    assert half.config._attn_implementation == "eager"


def test_bad_dtype_lists_choices():
    with pytest.raises(ValueError, match="dtype") as err:
        load_causal_lm(str(TINY), dtype="fp32", from_scratch=True)
    for choice in ("float32", "bfloat16", "float16", "auto"):
        assert choice in str(err.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_causal_lm(str(missing))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_tokenizer(str(missing))


def test_tokenizer_round_trip_and_special_ids():
    tok = load_tokenizer(str(TINY))
    text = "123+456=579"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    # one token per character, looked up independently in the stored vocabulary
    vocab = json.loads((TINY / "tokenizer.json").read_text())["model"]["vocab"]
    assert ids == [vocab[c] for c in text]
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token, tok.eos_token_id) == ("<pad>", 0, "<|endoftext|>", 1)
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text
    config = json.loads((TINY / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"], config["vocab_size"]) == (1, 0, len(tok))


def test_auto_tokenizer_matches_the_stored_tokenizer():
    # AutoTokenizer rebuilds a qwen2 checkpoint's tokenizer; it must split like tokenizer.json itself.
    text = "".join(c for c in string.printable if c not in "\t\r\x0b\x0c") + "  12 + 3\n= 15\n"
    raw = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    tok = load_tokenizer(str(TINY))
    ids = tok(text)["input_ids"]
    assert ids == raw.encode(text).ids
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.unk_token_id not in ids


def test_pad_token_falls_back_to_eos(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, tmp_path / name)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del cfg["pad_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"


def test_freeze():
    model = load_causal_lm(str(TINY), from_scratch=True)
    assert freeze(model) is model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_arithmetic_data_is_correct_and_disjoint():
    rows = {}
    for split in ("train", "val"):
        path = DATA / f"{split}.jsonl"
        assert path.stat().st_size < 200_000
        rows[split] = [json.loads(line) for line in path.read_text().splitlines()]
        for r in rows[split]:
            a, op, b = r["prompt"][:-1].partition("+") if "+" in r["prompt"] else r["prompt"][:-1].partition("*")
            assert r["prompt"].endswith("=") and op in "+*"
            expected = int(a) + int(b) if op == "+" else int(a) * int(b)
            assert r["answer"] == str(expected)
    assert len(rows["train"]) >= 2000 and len(rows["val"]) >= 100
    assert not {r["prompt"] for r in rows["train"]} & {r["prompt"] for r in rows["val"]}


def test_assets_are_reproducible():
    make_assets = _script("make_assets")
    train, val = make_assets.arithmetic_splits()
    for split, rows in (("train", train), ("val", val)):
        assert (DATA / f"{split}.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in rows)
    stored = json.loads((TINY / "tokenizer.json").read_text())["model"]["vocab"]
    assert make_assets.build_tokenizer().backend_tokenizer.get_vocab() == stored


def test_warmup_reduces_the_answer_loss():
    prep = _script("prepare_demo_model")
    tok = load_tokenizer(str(TINY))
    pairs = prep.encode_problems(tok, prep.read_jsonl(DATA / "train.jsonl")[:256])
    model = load_causal_lm(str(TINY), from_scratch=True, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    losses = prep.warmup(model, pairs, steps=40, batch_size=16, lr=3e-3, warmup_steps=5, seed=0)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
