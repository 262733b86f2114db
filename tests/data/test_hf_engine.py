"""HFEngine on a tiny random Qwen2: shapes, EOS handling, padding invariance, seeding, log-probs."""

from __future__ import annotations

import pytest
import torch

from rlvr_lightning.data.hf_engine import HFEngine
from rlvr_lightning.data.types import RolloutEngine, SamplingConfig


@pytest.fixture
def engine(tokenizer, tiny_model):
    eng = HFEngine(batch_size=6)
    eng.setup(tokenizer)
    eng.update_weights(tiny_model)
    return eng


def prompts(tokenizer):
    return [tokenizer(t)["input_ids"] for t in ("12+34=", "7=", "100+200+3=")]


def teacher_forced_logprobs(model, prompt, response, temperature):
    """log_softmax(logits / T) of ``response`` given ``prompt``, from one unpadded forward pass."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def test_protocol_and_shapes(engine, tokenizer):
    assert isinstance(engine, RolloutEngine)
    out = engine.generate(prompts(tokenizer), SamplingConfig(n=4, max_new_tokens=7), seed=1)
    assert len(out) == 3 and all(len(g) == 4 for g in out)
    for s in (s for g in out for s in g):
        assert 1 <= len(s.token_ids) <= 7 and s.logprobs is None
        eos_at = [i for i, t in enumerate(s.token_ids) if t == tokenizer.eos_token_id]
        if s.finish_reason == "stop":
            assert eos_at == [len(s.token_ids) - 1]  # cut right after the first EOS, EOS kept
        else:
            assert eos_at == [] and len(s.token_ids) == 7


def test_eos_cut_when_eos_is_likely(tokenizer, tiny_model):
    """Bias the LM head towards EOS so most samples stop early; each stops at its first EOS."""
    model = type(tiny_model)(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight[tokenizer.eos_token_id] * 0 + 0.05
        model.lm_head.weight.mul_(0.5)
    eng = HFEngine(batch_size=8)
    eng.setup(tokenizer)
    eng.update_weights(model)
    out = [
        s for g in eng.generate(prompts(tokenizer), SamplingConfig(n=8, max_new_tokens=12), seed=0) for s in g
    ]
    stops = [s for s in out if s.finish_reason == "stop"]
    assert stops, "expected some EOS-terminated samples"
    for s in stops:
        assert s.token_ids.index(tokenizer.eos_token_id) == len(s.token_ids) - 1


def test_left_padding_matches_single_prompt_greedy(engine, tokenizer):
    ps = prompts(tokenizer)
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=10, logprobs=True)
    batched = engine.generate(ps, greedy)
    for p, group in zip(ps, batched):
        single = engine.generate([p], greedy)[0][0]
        assert group[0].token_ids == single.token_ids
        torch.testing.assert_close(
            torch.tensor(group[0].logprobs), torch.tensor(single.logprobs), atol=1e-4, rtol=0
        )


def test_seeded_reproducible_and_global_rng_untouched(engine, tokenizer):
    cfg = SamplingConfig(n=3, max_new_tokens=8)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = engine.generate(prompts(tokenizer), cfg, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = engine.generate(prompts(tokenizer), cfg, seed=7)
    c = engine.generate(prompts(tokenizer), cfg, seed=8)
    ids = lambda out: [s.token_ids for g in out for s in g]
    assert ids(a) == ids(b) and ids(a) != ids(c)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_teacher_forcing(engine, tokenizer, tiny_model, temperature):
    ps = prompts(tokenizer)
    out = engine.generate(
        ps, SamplingConfig(n=2, temperature=temperature, max_new_tokens=9, logprobs=True), seed=3
    )
    for p, group in zip(ps, out):
        for s in group:
            ref = teacher_forced_logprobs(tiny_model, p, s.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-4, rtol=0)


def test_mode_restored_and_errors(engine, tokenizer, tiny_model):
    tiny_model.train()
    engine.generate(prompts(tokenizer)[:1], SamplingConfig(n=1, max_new_tokens=2), seed=0)
    assert tiny_model.training
    tiny_model.eval()
    with pytest.raises(RuntimeError, match="update_weights"):
        fresh = HFEngine()
        fresh.setup(tokenizer)
        fresh.generate([[3]], SamplingConfig())
    with pytest.raises(TypeError, match="no `generate` method"):
        HFEngine().update_weights(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        HFEngine(batch_size=0)


def test_per_prompt_seeds_make_samples_independent_of_the_other_prompts(tiny_model, tokenizer):
    from rlvr_lightning.data.hf_engine import HFEngine
    from rlvr_lightning.data.types import SamplingConfig

    engine = HFEngine(batch_size=64)
    engine.setup(tokenizer)
    engine.update_weights(tiny_model)
    sampling = SamplingConfig(n=3, temperature=1.0, max_new_tokens=6, logprobs=True)
    prompts = [tokenizer("12+34=")["input_ids"], tokenizer("7*8=")["input_ids"], tokenizer("999+1=")["input_ids"]]
    together = engine.generate(prompts, sampling, seed=[11, 22, 33])
    apart = [engine.generate([p], sampling, seed=[s])[0] for p, s in zip(prompts[::-1], [33, 22, 11])][::-1]
    assert [[s.token_ids for s in g] for g in together] == [[s.token_ids for s in g] for g in apart]
    other = engine.generate(prompts, sampling, seed=[12, 22, 33])
    assert [s.token_ids for s in other[1]] == [s.token_ids for s in together[1]]
