"""Log-probs/entropy from hidden states and the output embedding against full float64 logits + log_softmax."""

from __future__ import annotations

import math

import pytest
import torch

import rlvr_lightning.functional as F

TOL = 1e-5  # relative, against the float64 reference


def _reference(hidden, weight, labels, bias=None, temperature=1.0):
    """Full logits in float64, ``log_softmax``, gather; plain autograd."""
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    logsm = torch.log_softmax(logits / temperature, dim=-1)
    return logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


def _assert_rel(actual, expected, tol=TOL):
    """Elementwise ``|a - e| <= tol * (|e| + max|e|)``: relative, with the tensor's scale for near-zero
    entries."""
    actual, expected = actual.detach().double(), expected.detach().double()
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * float(expected.abs().max()), check_dtype=False)


def _data(n=23, h=16, v=41, seed=0, dtype=torch.float32, bias=False):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.randn(v, h, generator=gen, dtype=torch.float64) / math.sqrt(h) * 3).to(dtype)
    labels = torch.randint(0, v, (n,), generator=gen)
    b = torch.randn(v, generator=gen, dtype=torch.float64).to(dtype) if bias else None
    return hidden, weight, labels, b


def _upstream(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)


def _grads(fn, hidden, weight, labels, bias, w_lp, w_ent, **kw):
    leaves = [t.detach().clone().requires_grad_(True) for t in (hidden, weight)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_(True))
    lp, ent = fn(leaves[0], leaves[1], labels, bias=leaves[2] if bias is not None else None, **kw)
    loss = (lp.double() * w_lp).sum() + (ent.double() * w_ent).sum()
    return lp, ent, torch.autograd.grad(loss, leaves)


def _ref_fn(hidden, weight, labels, *, bias=None, temperature=1.0, chunk_size=None):
    return _reference(hidden, weight, labels, bias, temperature)


@pytest.mark.parametrize("chunk", [1, 4, 23, 512])  # 4 does not divide N=23; 23 = N; 512 > N
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_float64_reference(chunk, temperature, bias):
    hidden, weight, labels, b = _data(bias=bias)
    w_lp, w_ent = _upstream(labels.shape[0])
    kw = dict(temperature=temperature)
    lp, ent, grads = _grads(
        F.linear_logprobs_and_entropy, hidden, weight, labels, b, w_lp, w_ent, chunk_size=chunk, **kw
    )
    ref_lp, ref_ent, ref_grads = _grads(_ref_fn, hidden.double(), weight.double(), labels, b, w_lp, w_ent, **kw)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32 and lp.shape == labels.shape
    _assert_rel(lp, ref_lp)
    _assert_rel(ent, ref_ent)
    assert len(grads) == len(ref_grads) == (3 if bias else 2)
    for g, g_ref in zip(grads, ref_grads):
        assert g.dtype == torch.float32
        _assert_rel(g, g_ref)


def test_large_vocabulary_keeps_float32_accuracy():
    # entropy as a sum of one-signed terms: a float32 dot product over V = 16k terms would be off by ~1e-4
    hidden, weight, labels, _ = _data(n=16, h=32, v=16384, seed=11)
    w_lp, w_ent = _upstream(labels.shape[0], seed=12)
    lp, ent, grads = _grads(F.linear_logprobs_and_entropy, hidden, weight, labels, None, w_lp, w_ent)
    ref_lp, ref_ent, ref_grads = _grads(_ref_fn, hidden.double(), weight.double(), labels, None, w_lp, w_ent)
    _assert_rel(lp, ref_lp)
    _assert_rel(ent, ref_ent)
    for g, g_ref in zip(grads, ref_grads):
        _assert_rel(g, g_ref)


def test_matches_chunked_logits_path_and_leading_dims():
    hidden, weight, labels, _ = _data(n=12, seed=2)
    lp, ent = F.linear_logprobs_and_entropy(hidden.reshape(3, 4, -1), weight, labels.reshape(3, 4), chunk_size=5)
    assert lp.shape == (3, 4)
    ref_lp, ref_ent = F.logprobs_and_entropy(hidden @ weight.T, labels)
    torch.testing.assert_close(lp.reshape(-1), ref_lp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent.reshape(-1), ref_ent, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["logp", "entropy"])
def test_one_output_alone(which):
    hidden, weight, labels, _ = _data(seed=3)
    w = _upstream(labels.shape[0])[0]
    zero = torch.zeros_like(w)
    w_lp, w_ent = (w, zero) if which == "logp" else (zero, w)

    def only(h, wt, y, *, bias=None, **kw):
        lp, ent = F.linear_logprobs_and_entropy(h, wt, y, chunk_size=6, **kw)
        return (lp, ent.detach()) if which == "logp" else (lp.detach(), ent)

    _, _, grads = _grads(only, hidden, weight, labels, None, w_lp, w_ent)
    _, _, ref_grads = _grads(_ref_fn, hidden.double(), weight.double(), labels, None, w_lp, w_ent)
    for g, g_ref in zip(grads, ref_grads):
        _assert_rel(g, g_ref)


def test_gradcheck_float64():
    hidden, weight, labels, b = _data(n=5, h=3, v=7, seed=4, dtype=torch.float64, bias=True)
    leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, b)]

    def f(h, w, bias):
        return F.linear_logprobs_and_entropy(h, w, labels, bias=bias, temperature=0.8, chunk_size=2)

    assert f(*leaves)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    hidden, weight, labels, _ = _data(n=37, seed=5, dtype=dtype)
    w_lp, w_ent = _upstream(labels.shape[0], seed=6)
    lp, ent, (g_h, g_w) = _grads(F.linear_logprobs_and_entropy, hidden, weight, labels, None, w_lp, w_ent, chunk_size=8)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    assert g_h.dtype == dtype and g_w.dtype == dtype
    # the logits are the half-precision matmul's output; from there on float32 matches float64 to 1e-5
    logits = (hidden @ weight.T).double()
    logsm = torch.log_softmax(logits, dim=-1)
    _assert_rel(lp, logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1))
    _assert_rel(ent, -(logsm.exp() * logsm).sum(-1))
    # gradients come back in the input dtype: within two of its ulps of the float64 reference on the same inputs
    # (measured: 0.3% / 0.6% for bf16, 0.05% for fp16, the same as the full-logits path in that dtype)
    tol = 2 * torch.finfo(dtype).eps
    _, _, (r_h, r_w) = _grads(_ref_fn, hidden.double(), weight.double(), labels, None, w_lp, w_ent)
    _assert_rel(g_h, r_h, tol=tol)
    _assert_rel(g_w, r_w, tol=tol)


def test_tied_embedding_gets_both_gradients():
    torch.manual_seed(7)
    v, h, n = 19, 8, 10
    ids = torch.randint(0, v, (n,))
    labels = torch.randint(0, v, (n,))
    w_lp, w_ent = _upstream(n, seed=8)

    def step(emb, proj, fused):
        hidden = torch.tanh(proj(emb(ids)))
        if fused:
            lp, ent = F.linear_logprobs_and_entropy(hidden, emb.weight, labels, chunk_size=3)
        else:
            lp, ent = _reference(hidden, emb.weight, labels)
        ((lp.double() * w_lp).sum() + (ent.double() * w_ent).sum()).backward()
        return emb.weight.grad, proj.weight.grad

    emb, proj = torch.nn.Embedding(v, h), torch.nn.Linear(h, h)
    ref_emb, ref_proj = torch.nn.Embedding(v, h).double(), torch.nn.Linear(h, h).double()
    ref_emb.load_state_dict(emb.state_dict())
    ref_proj.load_state_dict(proj.state_dict())
    g_emb, g_proj = step(emb, proj, fused=True)
    r_emb, r_proj = step(ref_emb, ref_proj, fused=False)
    _assert_rel(g_emb, r_emb)
    _assert_rel(g_proj, r_proj)
    # both paths really contribute: the input-embedding rows of unused ids get only the output gradient
    unused = torch.ones(v, dtype=torch.bool)
    unused[ids] = False
    assert unused.any() and g_emb[unused].abs().sum() > 0


def test_no_grad_and_partial_requires_grad():
    hidden, weight, labels, _ = _data(seed=9)
    with torch.no_grad():
        lp, ent = F.linear_logprobs_and_entropy(hidden, weight, labels)
    assert not lp.requires_grad
    x = hidden.clone().requires_grad_(True)  # a frozen head: only the hidden states need a gradient
    lp, ent = F.linear_logprobs_and_entropy(x, weight, labels, chunk_size=5)
    (g,) = torch.autograd.grad(lp.sum() + ent.sum(), x)
    y = hidden.double().requires_grad_(True)
    r_lp, r_ent = _reference(y, weight, labels)
    (g_ref,) = torch.autograd.grad(r_lp.sum() + r_ent.sum(), y)
    _assert_rel(g, g_ref)


def test_outputs_pass_the_guard():
    hidden, weight, labels, _ = _data(n=50, seed=10)
    lp, ent = F.linear_logprobs_and_entropy(hidden * 30, weight, labels, chunk_size=7)  # peaked and flat rows
    F.check_logprobs_and_entropy(lp, ent, vocab_size=weight.shape[0])
    lp, ent = F.linear_logprobs_and_entropy(torch.zeros(3, 16), weight, labels[:3])  # uniform: H = log V
    torch.testing.assert_close(ent, torch.full((3,), math.log(weight.shape[0])))
    F.check_logprobs_and_entropy(lp, ent, vocab_size=weight.shape[0], atol=1e-6)


def test_guard_raises_on_impossible_values():
    good_lp, good_ent = torch.tensor([[-0.1, -2.0], [0.0, -5.0]]), torch.tensor([[0.5, 1.0], [0.0, 1.3]])
    F.check_logprobs_and_entropy(good_lp, good_ent, vocab_size=4)
    with pytest.raises(ValueError, match=r"1 of 4 log-probs exceed 0.*index \(1, 1\), value 0\.3"):
        F.check_logprobs_and_entropy(torch.tensor([[-0.1, -2.0], [0.0, 0.3]]), good_ent, vocab_size=4)
    with pytest.raises(ValueError, match="entropies are below 0"):
        F.check_logprobs_and_entropy(good_lp, torch.tensor([[0.5, -0.01], [0.0, 1.3]]), vocab_size=4)
    with pytest.raises(ValueError, match=r"entropies exceed log V = 1\.3863"):
        F.check_logprobs_and_entropy(good_lp, torch.tensor([[0.5, 1.0], [0.0, 1.4]]), vocab_size=4)
    with pytest.raises(ValueError, match="log-probs are not finite"):
        F.check_logprobs_and_entropy(torch.tensor([float("nan")]), torch.tensor([0.1]), vocab_size=4)
    with pytest.raises(ValueError, match="entropies are not finite"):
        F.check_logprobs_and_entropy(torch.tensor([-1.0]), torch.tensor([float("inf")]), vocab_size=4)
    # masked positions are not checked; rounding within atol passes
    mask = torch.tensor([[True, True], [True, False]])
    F.check_logprobs_and_entropy(torch.tensor([[-0.1, 1e-6], [0.0, 7.0]]), good_ent, vocab_size=4, mask=mask)
    with pytest.raises(ValueError, match="same shape"):
        F.check_logprobs_and_entropy(good_lp, good_ent[0], vocab_size=4)
    with pytest.raises(ValueError, match="vocab_size"):
        F.check_logprobs_and_entropy(good_lp, good_ent, vocab_size=0)


def test_input_errors():
    hidden, weight, labels, _ = _data()
    fn = F.linear_logprobs_and_entropy
    with pytest.raises(ValueError, match=r"labels must lie in \[0, V\) = \[0, 41\)"):
        fn(hidden, weight, torch.where(labels == labels[0], 41, labels))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, V\)"):
        fn(hidden, weight, torch.full_like(labels, -100))
    with pytest.raises(ValueError, match="integer"):
        fn(hidden, weight, labels.float())
    with pytest.raises(ValueError, match="labels must have shape"):
        fn(hidden, weight, labels[:-1])
    with pytest.raises(ValueError, match="weight must have shape"):
        fn(hidden, weight[:, :-1], labels)
    with pytest.raises(ValueError, match="dtype and device"):
        fn(hidden, weight.double(), labels)
    with pytest.raises(ValueError, match="bias"):
        fn(hidden, weight, labels, bias=torch.zeros(40))
    with pytest.raises(ValueError, match="temperature"):
        fn(hidden, weight, labels, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        fn(hidden, weight, labels, chunk_size=0)
