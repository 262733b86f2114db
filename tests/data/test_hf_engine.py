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


def test_generates_in_inference_mode_and_the_shared_model_then_trains(engine, tokenizer, tiny_model):
    """The engine decodes in inference mode (cheaper per op than no_grad); the model it shares with the trainer
    takes a forward and backward right after."""
    modes = []
    hook = tiny_model.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    try:
        out = engine.generate(prompts(tokenizer), SamplingConfig(n=2, max_new_tokens=5), seed=3)
    finally:
        hook.remove()
    assert modes and all(modes)
    ids = torch.tensor([prompts(tokenizer)[0] + out[0][0].token_ids])
    tiny_model.train()
    tiny_model(input_ids=ids).logits.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in tiny_model.parameters() if p.requires_grad)
    tiny_model.zero_grad()


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


def _warped_probs(logits, temperature, top_k, top_p):
    """Reference in float64: softmax(logits / T) restricted to the top-k, then to the smallest top-p nucleus."""
    p = torch.softmax(logits.double() / temperature, -1)
    order = torch.argsort(p, descending=True)
    keep = torch.zeros_like(p, dtype=torch.bool)
    mass = 0.0
    for rank, i in enumerate(order.tolist()):
        if (top_k > 0 and rank >= top_k) or mass >= top_p:
            break
        keep[i] = True
        mass += float(p[i])
    p = torch.where(keep, p, torch.zeros_like(p))
    return p / p.sum()


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, -1, 1.0), (0.7, 3, 1.0), (1.3, -1, 0.8)])
def test_seeded_sampler_draws_the_warped_distribution(temperature, top_k, top_p):
    """Evenly spaced numbers u = (i + 0.5) / N through the inverse CDF give every token exactly its probability's
    share of the N rows (to 1/N): the sampler draws from softmax(logits / T) truncated by top-k and top-p."""
    from rlvr_lightning.data.hf_engine import SeededSampler

    logits = torch.tensor([2.0, 0.5, -1.0, 1.5, 0.0, -3.0])
    rows = 4000
    uniforms = ((torch.arange(rows, dtype=torch.float64) + 0.5) / rows)[:, None]
    sampler = SeededSampler(SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p), uniforms, 1)
    out = sampler(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone())
    assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == rows * (logits.numel() - 1)
    freq = torch.bincount(out.argmax(-1), minlength=logits.numel()).double() / rows
    torch.testing.assert_close(freq, _warped_probs(logits, temperature, top_k, top_p), atol=1.0 / rows, rtol=0)


def test_seeded_sampler_rows_use_their_own_numbers_at_each_step():
    """Step t of a row reads its t-th number: the same row gives the same token whatever the other rows hold."""
    from rlvr_lightning.data.hf_engine import SeededSampler

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, generator=gen)
    uniforms = torch.rand(3, 4, generator=gen, dtype=torch.float64)
    sampler = SeededSampler(SamplingConfig(), uniforms, prompt_width=5)
    at_step2 = sampler(torch.zeros(3, 7, dtype=torch.long), logits.clone()).argmax(-1)
    other = logits.clone()
    other[1:] = torch.randn(2, 9, generator=gen)
    assert at_step2[0] == sampler(torch.zeros(3, 7, dtype=torch.long), other).argmax(-1)[0]
    cdf = torch.softmax(logits[0].double(), -1).cumsum(-1)
    assert int(at_step2[0]) == int((cdf <= uniforms[0, 2] * cdf[-1]).sum())


def test_per_prompt_samples_do_not_depend_on_batch_size(tiny_model, tokenizer):
    """One call for all prompts, or one prompt per call (batch_size rounds up to a whole group): same samples."""
    sampling = SamplingConfig(n=3, temperature=1.0, max_new_tokens=6)
    out = {}
    for bs in (None, 2):
        eng = HFEngine(batch_size=bs)
        eng.setup(tokenizer)
        eng.update_weights(tiny_model)
        out[bs] = [[s.token_ids for s in g] for g in eng.generate(prompts(tokenizer), sampling, seed=[5, 6, 7])]
    assert out[None] == out[2]
    with pytest.raises(ValueError, match="batch_size must be >= 1 or None"):
        HFEngine(batch_size=0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prompt_prefill_gives_the_unshared_samples(tiny_model, tokenizer, temperature):
    """The prompt's KV cache computed once and repeated for its n samples: the same tokens and log-probs as
    encoding every sample's prompt (a 1-token prompt included)."""
    ps = prompts(tokenizer) + [tokenizer("7")["input_ids"][:1]]
    sampling = SamplingConfig(n=3, temperature=temperature, max_new_tokens=8, logprobs=True)
    out = {}
    for share in (True, False):
        eng = HFEngine(share_prompt_prefill=share)
        eng.setup(tokenizer)
        eng.update_weights(tiny_model)
        out[share] = [s for g in eng.generate(ps, sampling, seed=[1, 2, 3, 4]) for s in g]
    assert [s.token_ids for s in out[True]] == [s.token_ids for s in out[False]]
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
