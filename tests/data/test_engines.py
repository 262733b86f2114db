"""The rollout engine is chosen by the machine (vLLM with a GPU when importable, else HF), by name, or given; an
automatic vLLM choice falls back to HF on a CPU trainer; a vLLM engine without a model path takes the policy's
(the tokenizer's) path. vLLM itself is never started here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlvr_lightning.data import HFEngine, RolloutDataModule
from rlvr_lightning.data import engines
from rlvr_lightning.data.engines import make_engine
from rlvr_lightning.data.vllm_engine import VLLMEngine


def machine(monkeypatch, *, vllm: bool, gpu: bool) -> None:
    monkeypatch.setattr(engines, "vllm_importable", lambda: vllm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)


@pytest.mark.parametrize("vllm,gpu,expected", [(True, True, VLLMEngine), (True, False, HFEngine),
                                               (False, True, HFEngine), (False, False, HFEngine)])
@pytest.mark.parametrize("spec", ["auto", None])
def test_auto_takes_vllm_only_with_a_gpu_and_vllm(monkeypatch, spec, vllm, gpu, expected):
    machine(monkeypatch, vllm=vllm, gpu=gpu)
    engine, reason = make_engine(spec)
    assert type(engine) is expected and reason


def test_names_and_objects(monkeypatch):
    machine(monkeypatch, vllm=False, gpu=True)
    assert type(make_engine("hf")[0]) is HFEngine
    mine = HFEngine(batch_size=3)
    assert make_engine(mine)[0] is mine
    with pytest.raises(ImportError, match=r"vLLM is not installed.*rlvr-lightning\[vllm\]"):
        make_engine("vllm")
    with pytest.raises(ValueError, match=r"one of \['auto', 'hf', 'vllm'\], got 'sglang'"):
        make_engine("sglang")
    machine(monkeypatch, vllm=True, gpu=False)
    assert type(make_engine("vllm")[0]) is VLLMEngine  # asked for by name: taken even without a GPU


def test_datamodule_sampling_logprobs_follow_the_engine_and_auto_vllm_falls_back_on_a_cpu_trainer(
        monkeypatch, tokenizer_dir):
    machine(monkeypatch, vllm=True, gpu=True)
    dm = RolloutDataModule(tokenizer=tokenizer_dir, rewards=[len])
    assert isinstance(dm.engine, VLLMEngine) and dm.sampling.logprobs  # TIS against vLLM's log-probs
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1,
                                 global_rank=0)
    dm.setup("validate")
    assert isinstance(dm.engine, HFEngine) and not dm.sampling.logprobs
    given = RolloutDataModule(tokenizer=tokenizer_dir, engine=VLLMEngine(model="x"), rewards=[len])
    given.trainer = dm.trainer
    given.setup("validate")
    assert isinstance(given.engine, VLLMEngine)  # an engine given explicitly is left alone
    forced = RolloutDataModule(tokenizer=tokenizer_dir, engine="hf", rollout_logprobs=True, rewards=[len])
    assert isinstance(forced.engine, HFEngine) and forced.sampling.logprobs


def test_vllm_engine_without_a_model_starts_from_the_tokenizer_path(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    engine = VLLMEngine()
    with pytest.raises(ValueError, match="no model path yet"):
        engine._start()
    engine.setup(tok)
    assert engine.model == tokenizer_dir and engine.stop_token_ids == [tok.eos_token_id]
    named = VLLMEngine(model="/models/other")
    named.setup(tok)
    assert named.model == "/models/other"
