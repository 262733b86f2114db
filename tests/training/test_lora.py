"""LoRA through PEFT (``model.lora``, configs/smoke_lora.yaml): few trainable parameters, adapters-only checkpoints,
exact resume, the frozen base as the KL reference, merged weights for the rollout engine and for export."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from toy_training import REPO, SMOKE_LORA, fit, initial_policy, random_batch, response_logprobs, state

from rlvr_lightning.lora import AdaptersDisabled, LoRAConfig, apply_lora, merged_weights

pytest.importorskip("peft")

KL = ("--model.kl", "KL", "--model.kl.coef", "0.1")


def _base_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base weights of a LoRA policy under the plain model's names (adapters left out)."""
    base = policy.get_base_model().state_dict()
    return {k.replace(".base_layer", ""): v for k, v in base.items() if "lora_" not in k}


def _rows(root) -> list[dict[str, str]]:
    return list(csv.DictReader(open(next(root.rglob("metrics.csv")))))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """2 rollout steps of the LoRA smoke config with a KL term toward the base."""
    root = tmp_path_factory.mktemp("lora")
    return root, fit(root, *KL, "--trainer.max_steps", "2", config=SMOKE_LORA)


def test_lora_trains_under_five_percent_of_the_parameters_and_only_the_adapters(lora_run):
    root, cli = lora_run
    rows = _rows(root)
    trainable, total = float(rows[-1]["model/trainable_params"]), float(rows[-1]["model/total_params"])
    assert trainable == 4 * 2 * (256 + 192 + 192 + 256 + 3 * 512)  # rank 2 on the 7 linear layers of 4 blocks
    assert total == 801_280 + trainable and trainable / total < 0.05
    init = state(initial_policy())
    base = _base_state(cli.model.policy)
    assert base.keys() == init.keys() and all(torch.equal(base[k], init[k]) for k in init), "the base moved"
    lora_b = [p for n, p in cli.model.policy.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) > 0 for p in lora_b), "an adapter did not train (B starts at 0)"
    # the optimizer holds the adapters only
    opt_params = [p for g in cli.model.optimizers().param_groups for p in g["params"]]
    assert sum(p.numel() for p in opt_params) == trainable


def test_lora_checkpoint_holds_the_adapters_and_their_optimizer_state_only(lora_run):
    root, cli = lora_run
    ckpt = torch.load(next(root.rglob("last.ckpt")), weights_only=True)  # plain tensors and containers
    keys = set(ckpt["state_dict"])
    expected = {f"policy.{n}" for n, p in cli.model.policy.named_parameters() if p.requires_grad}
    assert keys == expected and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert len(ckpt["optimizer_states"][0]["state"]) == len(expected)
    assert ckpt["hyper_parameters"]["lora"] == {"rank": 2, "alpha": 16.0, "dropout": 0.0,
                                                "target_modules": "all-linear"}
    assert ckpt["rlvr"]["seed"] == 0


def test_kl_reference_is_the_base_with_adapters_disabled(lora_run):
    root, cli = lora_run
    ref, policy = cli.model.reference, cli.model.policy
    assert isinstance(ref, AdaptersDisabled) and ref.policy is policy
    assert list(ref.parameters()) == []  # no second copy of the model
    batch = random_batch()
    base_logp = response_logprobs(initial_policy(), batch)  # the untrained model, loaded on its own
    ref_logp, policy_logp = response_logprobs(ref, batch), response_logprobs(policy, batch)
    assert torch.allclose(ref_logp, base_logp, rtol=0, atol=1e-6)
    assert float((policy_logp - base_logp).abs().max()) > 1e-4  # the adapters are on again afterwards
    assert policy.training and all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    assert [float(r["train/kl_ref"]) > 0 for r in _rows(root)] == [False, True]  # 0 before the first update


def test_lora_resume_with_dropout_is_bit_exact(tmp_path):
    opts = ("--model.lora.dropout", "0.1", *KL)
    straight = fit(tmp_path, *opts, "--trainer.max_steps", "4", name="straight", config=SMOKE_LORA)
    first = fit(tmp_path, *opts, "--trainer.max_steps", "2", name="split", config=SMOKE_LORA)
    ckpt = next((tmp_path / "split").rglob("last.ckpt"))
    resumed = fit(tmp_path, *opts, "--trainer.max_steps", "4", "--ckpt_path", str(ckpt), name="split",
                  config=SMOKE_LORA)
    assert first.trainer.global_step == 2 and resumed.trainer.global_step == 4
    a, b = state(resumed.model.policy), state(straight.model.policy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # dropout was on: without it the same two steps end elsewhere
    no_dropout = fit(tmp_path, *KL, "--trainer.max_steps", "2", name="nodrop", config=SMOKE_LORA)
    c, d = state(first.model.policy), state(no_dropout.model.policy)
    assert max(float((c[k] - d[k]).abs().max()) for k in c) > 1e-6


def test_loading_a_full_fine_tuning_checkpoint_into_a_lora_module_names_the_problem():
    # (`rlvr fit --ckpt_path` takes model.lora from the checkpoint's hyper-parameters; this is the programmatic case)
    from rlvr_lightning.module import RLVRModule

    module = RLVRModule(str(REPO / "assets" / "tiny-qwen2"), from_scratch=True, lora=LoRAConfig(rank=2))
    module.configure_model()
    full = {"state_dict": {f"policy.{k}": v for k, v in initial_policy().state_dict().items()}}
    with pytest.raises(ValueError, match="does not hold this run's LoRA adapters .*56 missing"):
        module.on_load_checkpoint(full)
    assert not module.strict_loading  # the base is not in a LoRA checkpoint
    assert RLVRModule(str(REPO / "assets" / "tiny-qwen2")).strict_loading


def _trained_lora(seed: int = 0, **config) -> torch.nn.Module:
    """The tiny model with LoRA adapters whose B matrices are random (a fresh adapter is the identity)."""
    model = apply_lora(initial_policy(), LoRAConfig(**config), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("config", [{"rank": 2}, {"rank": 4, "alpha": 3.0, "target_modules": ["q_proj", "v_proj"]}])
def test_merged_weights_equal_peft_merge_and_unload(config):
    model = _trained_lora(**config)
    merged = dict(merged_weights(model))
    reference = copy.deepcopy(model).merge_and_unload().state_dict()  # PEFT's own merge, in place
    assert list(merged) == list(reference) == list(initial_policy().state_dict())
    for k in reference:
        assert torch.allclose(merged[k], reference[k], rtol=0, atol=1e-6), k
    assert any(not torch.equal(merged[k], v) for k, v in initial_policy().state_dict().items())
    # the policy is untouched: still unmerged, same log-probs as before
    batch = random_batch(1)
    plain = initial_policy()
    plain.load_state_dict(merged)
    assert torch.allclose(response_logprobs(plain, batch), response_logprobs(model, batch), rtol=0, atol=1e-5)


def test_merged_weights_of_a_plain_model_are_its_state_dict():
    model = initial_policy()
    assert {k: v for k, v in merged_weights(model)}.keys() == model.state_dict().keys()


def test_vllm_weight_sync_sends_merged_weights():
    from rlvr_lightning.data.vllm_engine import VLLMEngine

    model = _trained_lora()
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    engine = VLLMEngine(model="unused", weight_sync_bucket_mb=0)  # _stream needs no vLLM
    sent = dict(engine._stream(model, torch.bfloat16))
    assert sent.keys() == reference.keys()
    for k, v in reference.items():
        assert sent[k].dtype == torch.bfloat16 and torch.equal(sent[k], v.to(torch.bfloat16)), k


def test_lora_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.lora.rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="model.lora.dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"model.lora.target_modules=\['nope'\].*q_proj"):
        apply_lora(initial_policy(), LoRAConfig(target_modules=["nope"]), seed=0)
