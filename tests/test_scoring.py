"""Scoring rollouts: the hidden-state path against full logits and a float64 reference (values and parameter
gradients, tied and untied heads, temperature), its fall-back for models that transform their logits, the guard,
and the trimming of padding."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "components"))
from _loss_inputs import TINY, make_batch  # noqa: E402

import rlvr_lightning.fused_head as fused_head  # noqa: E402
from rlvr_lightning.fused_head import hidden_path_unsupported  # noqa: E402
from rlvr_lightning.scoring import Scoring, sequence_logprobs, trimmed  # noqa: E402


def _policy(tied: bool = True, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(TINY)
    config.tie_word_embeddings = tied
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # a larger head, so that the distributions are far from uniform (mean entropy ~2 nats)
        model.get_output_embeddings().weight.mul_(3.0 if tied else 12.0)
    return model.to(dtype)


def _float64_reference(model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """log_softmax of the float64 model's full logits, at the batch's temperature; shape ``(B, T)`` each."""
    input_ids, attention_mask, position_ids = batch.model_inputs()
    T = batch.response_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits[:, -(T + 1):-1] / batch.temperature
    logsm = torch.log_softmax(logits, dim=-1)
    return logsm.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


def _value_and_grads(model, fn, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logp, entropy, flat parameter gradient of sum(w1 logp + w2 entropy) over response tokens)."""
    model.zero_grad(set_to_none=True)
    logp, ent = fn(model, batch)
    g = torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(logp.shape, generator=g), torch.randn(logp.shape, generator=g)
    m = batch.response_mask
    ((logp * w1.to(logp.dtype))[m].sum() + (ent * w2.to(ent.dtype))[m].sum()).backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return logp.detach(), ent.detach(), grad


def _rel(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    a, b = a.double(), b.double()
    if mask is not None:
        a, b = a[mask], b[mask]
    return float((a - b).abs().max() / b.abs().max())


def _assert_matches(got, other, exact, mask, *, other_tol: float, grad_tol: float) -> None:
    """``(logp, entropy, grad)`` triples: ``got`` within ``other_tol`` (values) / ``grad_tol`` (gradients) of
    another float32 path, within 1e-5 of the float64 reference ``exact`` (relative)."""
    for i, what in enumerate(("logp", "entropy")):
        assert _rel(got[i], other[i], mask) < other_tol, what
        assert _rel(got[i], exact[i], mask) < 1e-5, what
    assert _rel(got[2], other[2]) < grad_tol
    assert _rel(got[2], exact[2]) < 1e-5


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hidden_path_matches_full_logits_and_float64(tied, temperature):
    model = _policy(tied)
    batch = make_batch(model.config.vocab_size)
    batch.temperature = temperature
    mask = batch.response_mask
    hidden = _value_and_grads(model, lambda m, b: sequence_logprobs(m, b, grad=True, check=True), batch)
    assert hidden_path_unsupported(model) is None
    full = _value_and_grads(model, lambda m, b: sequence_logprobs(m, b, grad=True, logits_path="full"), batch)
    exact = _value_and_grads(model.double(), _float64_reference, batch)
    assert 0.5 < float(exact[1][mask].mean()) < 0.9 * torch.log(torch.tensor(99.0))  # neither peaked nor uniform
    _assert_matches(hidden, full, exact, mask, other_tol=1e-6, grad_tol=1e-6)


def test_float64_model_is_scored_in_float64_on_the_hidden_path():
    model = _policy(dtype=torch.float64)
    batch = make_batch(model.config.vocab_size)
    logp, ent = sequence_logprobs(model, batch, grad=False)
    with torch.no_grad():
        ref_logp, ref_ent = _float64_reference(model, batch)
    assert logp.dtype == torch.float64
    assert _rel(logp, ref_logp, batch.response_mask) < 1e-12 and _rel(ent, ref_ent, batch.response_mask) < 1e-12


def _softcapped_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config)


def test_a_model_that_transforms_its_logits_falls_back_to_full_logits():
    model = _softcapped_model()  # Gemma 2: logits soft-capped after the head
    batch = make_batch(99)
    with pytest.warns(UserWarning, match="does not apply"):
        logp, ent = sequence_logprobs(model, batch, grad=False)
    assert "unchanged" in hidden_path_unsupported(model)
    full_logp, full_ent = sequence_logprobs(model, batch, grad=False, logits_path="full")
    torch.testing.assert_close(logp, full_logp)
    torch.testing.assert_close(ent, full_ent)
    # the head is restored: the model's own forward gives soft-capped logits again
    with torch.no_grad():
        logits = model(input_ids=batch.model_inputs()[0]).logits
    assert float(logits.abs().max()) <= 0.5


def test_a_head_that_is_no_linear_falls_back_to_full_logits():
    model = _policy()
    model.get_output_embeddings = lambda: None
    batch = make_batch(99)
    with pytest.warns(UserWarning, match="not an nn.Linear"):
        logp, _ = sequence_logprobs(model, batch, grad=False)
    torch.testing.assert_close(logp, sequence_logprobs(model, batch, grad=False, logits_path="full")[0])


def test_the_guard_catches_positive_logprobs_of_a_faulty_kernel(monkeypatch):
    model = _policy()
    batch = make_batch(99)
    real = fused_head.F.linear_logprobs_and_entropy

    def faulty(*args, **kw):
        logp, ent = real(*args, **kw)
        return -logp, ent  # a sign error: positive log-probs, as a fused kernel elsewhere once returned

    monkeypatch.setattr(fused_head.F, "linear_logprobs_and_entropy", faulty)
    sequence_logprobs(model, batch, grad=False)  # unguarded: passes silently
    with pytest.raises(ValueError, match="log-probs exceed 0"):
        sequence_logprobs(model, batch, grad=False, check=True)


def test_trimming_drops_only_padding_and_changes_no_value():
    model = _policy()
    full = make_batch(99)  # prompts of 5, 3, 4, 5, 2, 5 tokens (width 5); responses of 7, 6, 5, 7, 3, 4 (width 7)
    cut = trimmed(full.select([1, 4, 5]))
    assert cut.prompt_ids.shape[1] == 5 and cut.response_ids.shape[1] == 6
    batch = full.select([1, 4])
    narrow = trimmed(batch)
    assert narrow.prompt_ids.shape[1] == 3 and narrow.response_ids.shape[1] == 6
    assert bool((narrow.prompt_ids[narrow.prompt_mask] == batch.prompt_ids[batch.prompt_mask]).all())
    logp, ent = sequence_logprobs(model, batch, grad=False)
    with torch.no_grad():
        ref_logp, ref_ent = _float64_reference(model.double(), batch)  # the untrimmed batch
    mask = batch.response_mask
    assert logp.shape == mask.shape and bool((logp[:, 6:] == 0).all())  # beyond the longest response: 0
    assert _rel(logp, ref_logp, mask) < 1e-5 and _rel(ent, ref_ent, mask) < 1e-5


def test_scoring_a_batch_by_token_budget_keeps_the_batch_order():
    model = _policy()
    batch = make_batch(99)
    whole = Scoring().score(model, batch)
    by_tokens = Scoring(micro_batch_tokens=24).score(model, batch)
    assert len(Scoring(micro_batch_tokens=24).micro_batches(batch, torch.arange(6))) > 1
    for a, b in zip(whole, by_tokens):
        assert _rel(a, b, batch.response_mask) < 1e-6
    assert model.training  # the mode is restored


def test_an_unknown_logits_path_is_refused_by_name():
    with pytest.raises(ValueError, match="model.logits_path must be one of"):
        Scoring(logits_path="fast")


def _grouped_batch(vocab: int):
    """``make_batch`` with the prompts of a GRPO batch: rows 0-2 share row 0's 5-token prompt, rows 3-5 row 4's
    2-token prompt (left-padded to 5)."""
    batch = make_batch(vocab)
    leader = torch.tensor([0, 0, 0, 4, 4, 4])
    batch.prompt_ids, batch.prompt_mask = batch.prompt_ids[leader], batch.prompt_mask[leader]
    return batch


def _forward_batch_sizes(model) -> list[int]:
    """The batch size of every forward of ``model``'s decoder from now on."""
    sizes: list[int] = []
    model.get_decoder().register_forward_pre_hook(lambda mod, args, kw: sizes.append(len(kw["input_ids"])),
                                                  with_kwargs=True)
    return sizes


@pytest.mark.parametrize("logits_path", ["hidden", "full"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_a_shared_prompt_prefix_gives_the_same_logprobs_entropies_and_gradients(logits_path, temperature):
    """Each distinct prompt (but its last token) runs once, its KV cache indexed out to its rows: log-probs,
    entropies and every parameter gradient equal the plain forward's and a float64 reference's."""
    model = _policy(tied=False)
    batch = _grouped_batch(model.config.vocab_size)
    batch.temperature = temperature
    mask = batch.response_mask
    plain = _value_and_grads(model, lambda m, b: sequence_logprobs(m, b, grad=True, logits_path=logits_path), batch)
    sizes = _forward_batch_sizes(model)
    shared = _value_and_grads(model, lambda m, b: sequence_logprobs(m, b, grad=True, logits_path=logits_path,
                                                                    share_prefix=True), batch)
    assert sizes == [2, 6]  # the 2 distinct prompts' prefixes, then every row's last prompt token and response
    exact = _value_and_grads(model.double(), _float64_reference, batch)
    _assert_matches(shared, plain, exact, mask, other_tol=1e-6, grad_tol=1e-5)


def test_no_prefix_is_shared_when_every_prompt_differs_or_activations_are_checkpointed():
    model = _policy()
    sizes = _forward_batch_sizes(model)
    batch = make_batch(model.config.vocab_size)  # six different prompts
    sequence_logprobs(model, batch, grad=False, share_prefix=True)
    model.gradient_checkpointing_enable()
    model.train()
    sequence_logprobs(model, _grouped_batch(model.config.vocab_size), grad=True, share_prefix=True)
    assert sizes == [6, 6]  # one plain forward each


def test_a_model_on_full_logits_shares_its_prompt_prefixes_with_one_prefix_forward():
    """After the fall-back is known, a shared-prefix forward runs each distinct prefix once, then every row."""
    model = _softcapped_model()
    batch = _grouped_batch(99)
    with pytest.warns(UserWarning, match="does not apply"):
        plain_logp, plain_ent = sequence_logprobs(model, batch, grad=False)
    sizes = _forward_batch_sizes(model)
    logp, ent = sequence_logprobs(model, batch, grad=False, share_prefix=True)
    assert sizes == [2, 6]
    mask = batch.response_mask
    assert _rel(logp, plain_logp, mask) < 1e-6 and _rel(ent, plain_ent, mask) < 1e-6
