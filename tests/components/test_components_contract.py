"""Contract every built-in component of every axis must meet: shapes, padding contributes nothing, gradients
flow where they should, bf16 inputs work, state survives a ``state_dict`` round-trip."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _comp_inputs import REQUIRED_ARGS, B, T, all_builtin_params, build, builtin_entries, make_inputs

from rlvr_lightning.components import (
    AXES,
    Advantage,
    Aggregation,
    Clip,
    EntropyBonus,
    KLPenalty,
    Reweight,
    ReweightContext,
)

PARAMS = all_builtin_params()
IDS = [f"{axis.__name__}-{name}" for axis, name in PARAMS]
FLOATS = ("logp", "old_logp", "ref_logp", "entropy", "loss")


def _run(axis, comp, x, dtype=torch.float32):
    """Apply ``comp`` to ``x``: (per-token outputs, scalar outputs, grad of the leaf, grad expected)."""
    cast = {k: getattr(x, k).to(dtype) for k in FLOATS}
    tok, sca, leaf, expect = {}, {}, None, False
    if axis is Advantage:
        tok["adv"] = comp(x.scores, x.group_ids, x.mask)
    elif axis is Clip:
        leaf = cast["logp"].clone().requires_grad_()
        loss, stats = comp(leaf, cast["old_logp"], x.advantages, x.mask)
        tok["loss"], sca = loss, dict(stats)
        for k, v in stats.items():
            assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad, k
        loss.sum().backward()
        expect = True
    elif axis is Reweight:
        leaf = cast["logp"].clone().requires_grad_()
        ctx = ReweightContext(
            advantages=x.advantages,
            logp=cast["logp"],
            old_logp=cast["old_logp"],
            entropy=cast["entropy"],
            mask=x.mask,
            step=3,
            total_steps=10,
            epoch=2,
            total_epochs=3,
        )
        tok["weights"] = comp(ctx)
        extra = comp.extra_loss(ctx, leaf)
        if extra is not None:
            tok["extra"] = extra
            extra.sum().backward()
            expect = True  # a penalty on the differentiable logp
    elif axis is Aggregation:
        leaf = cast["loss"].clone().requires_grad_()
        out = comp(leaf, x.mask)
        assert out.dim() == 0
        sca["agg"] = out
        out.backward()
        expect = True
    elif axis is KLPenalty:
        leaf = cast["logp"].clone().requires_grad_()
        out = comp(leaf, cast["ref_logp"], x.mask)
        tok["kl"] = out
        if out.requires_grad:
            out.sum().backward()
        expect = comp.needs_reference
    elif axis is EntropyBonus:
        leaf = cast["entropy"].clone().requires_grad_()
        out = comp(leaf, x.mask)
        tok["bonus"] = out
        if out.requires_grad:
            out.sum().backward()
        expect = comp.enabled and getattr(comp, "alpha", 0.0) != 0.0
    else:  # pragma: no cover - a new axis must get a branch here
        raise AssertionError(f"no contract runner for axis {axis.__name__}")
    grad = None if leaf is None else leaf.grad
    return tok, sca, grad, expect


def test_every_axis_has_builtins():
    for axis in AXES:
        assert builtin_entries(axis), axis.__name__


def test_builtins_build_with_defaults_or_declared_minimal_args():
    for axis, name in PARAMS:
        cls = axis.get(name)
        comp = build(axis, name)
        assert isinstance(comp, axis) and cls.registry_name == name
        if cls.__name__ not in REQUIRED_ARGS:
            cls()  # every other built-in has a default for every argument


@pytest.mark.parametrize(("axis", "name"), PARAMS, ids=IDS)
def test_shapes_padding_and_gradients(axis, name):
    x = make_inputs()
    tok, sca, grad, expect = _run(axis, build(axis, name), x)
    tok_g, sca_g, grad_g, _ = _run(axis, build(axis, name), x.with_garbage())
    pad = ~x.mask
    for k, v in tok.items():
        assert v.shape == (B, T), k
        assert torch.isfinite(v).all(), k
        assert (v[pad] == 0).all(), f"{k} is not 0 on padding"
        assert (tok_g[k][pad] == 0).all(), f"{k} is not 0 on garbage padding"
        torch.testing.assert_close(tok_g[k][x.mask], v[x.mask], rtol=1e-6, atol=1e-7, msg=k)
    for k, v in sca.items():
        torch.testing.assert_close(sca_g[k], v, rtol=1e-6, atol=1e-7, msg=k)
    for g in (grad, grad_g):
        if g is not None:
            assert torch.isfinite(g).all()
            assert (g[pad] == 0).all(), "gradient reaches padded positions"
    if expect:
        assert grad is not None and grad[x.mask].abs().sum() > 0, "no gradient reaches valid tokens"
    elif grad is not None:
        assert (grad == 0).all()


@pytest.mark.parametrize(("axis", "name"), PARAMS, ids=IDS)
def test_bf16_inputs(axis, name):
    x = make_inputs(seed=1)
    tok, sca, grad, _ = _run(axis, build(axis, name), x.with_garbage(), dtype=torch.bfloat16)
    for k, v in {**tok, **sca}.items():
        assert torch.isfinite(v.float()).all(), k
    if grad is not None:
        assert torch.isfinite(grad.float()).all()


@pytest.mark.parametrize(("axis", "name"), PARAMS, ids=IDS)
def test_state_dict_round_trip(axis, name):
    comp = build(axis, name)
    for h in (0.01, 0.02, 0.03):  # low entropy: moves every adaptive controller off its initial value
        comp.update(h)
    state = comp.state_dict()
    json.dumps(state)  # plain Python values, safe in any checkpoint
    fresh = build(axis, name)
    fresh.load_state_dict(copy.deepcopy(state))
    assert fresh.state_dict() == state
    assert fresh.log_values() == comp.log_values()
    x = make_inputs(seed=2)
    tok_a, sca_a, _, _ = _run(axis, comp, x)
    tok_b, sca_b, _, _ = _run(axis, fresh, x)
    for k in tok_a:
        assert torch.equal(tok_a[k], tok_b[k]), k
    for k in sca_a:
        assert torch.equal(sca_a[k], sca_b[k]), k


@pytest.mark.parametrize(("axis", "name"), PARAMS, ids=IDS)
def test_log_values_are_floats(axis, name):
    comp = build(axis, name)
    _run(axis, comp, make_inputs())
    for k, v in comp.log_values().items():
        assert isinstance(k, str) and isinstance(v, float)


def test_aggregations_declare_their_normalizers():
    for _, cls in builtin_entries(Aggregation):
        assert set(cls.normalizers) <= {"tokens", "seqs"} and cls.normalizers, cls.__name__


@pytest.mark.parametrize("axis", AXES, ids=lambda a: a.__name__)
def test_axis_bases_are_abstract(axis):
    with pytest.raises(TypeError):
        axis()
