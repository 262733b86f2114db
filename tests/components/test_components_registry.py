"""Registries: built-in names, duplicate refusal, unknown-name errors, user subclasses, YAML selection."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

from rlvr_lightning.components import (
    AXES,
    PAR,
    Advantage,
    Aggregation,
    Clip,
    EntropyBonus,
    KLPenalty,
    Reweight,
    ReweightContext,
    Uniform,
)

EXPECTED = {
    Advantage: {"grpo", "drgrpo", "rloo", "reinforce_pp_baseline"},
    Clip: {"ppo", "none", "cispo", "gspo"},
    Reweight: {
        "uniform",
        "par",
        "par_stage",
        "par_epoch",
        "par_entropy",
        "positive_only",
        "negative_only",
        "random_positive_drop",
        "high_entropy",
        "clip_cov",
        "kl_cov",
    },
    Aggregation: {"token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"},
    KLPenalty: {"none", "kl"},
    EntropyBonus: {"none", "constant", "adaptive"},
}


@Reweight.register("test_user_halve")
class HalveAll(Reweight):
    """A user strategy defined outside the package: weight 0.5 on every valid token."""

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def __call__(self, ctx: ReweightContext) -> torch.Tensor:
        return self.factor * ctx.mask.to(ctx.advantages.dtype)


@pytest.mark.parametrize("axis", AXES, ids=lambda a: a.__name__)
def test_builtin_names(axis):
    assert EXPECTED[axis] <= set(axis.names())
    assert axis.names() == sorted(axis.names())


def test_axes_have_separate_registries():
    assert Clip.get("none") is not KLPenalty.get("none")
    assert "par" not in Clip.names()


def test_user_subclass_joins_registry():
    assert "test_user_halve" in Reweight.names()
    assert Reweight.get("test_user_halve") is HalveAll
    comp = Reweight.create("test_user_halve", factor=0.25)
    assert isinstance(comp, HalveAll) and comp.factor == 0.25
    assert HalveAll.registry_name == "test_user_halve"


def test_duplicate_name_refused():
    with pytest.raises(ValueError, match="'par' is already registered"):

        @Reweight.register("par")
        class OtherPAR(Reweight):
            def __call__(self, ctx):
                return ctx.mask.float()

    assert Reweight.get("par") is PAR


def test_reregistering_same_class_is_harmless():
    assert Reweight.register("uniform")(Uniform) is Uniform
    assert Reweight.get("uniform") is Uniform


def test_wrong_axis_refused():
    with pytest.raises(TypeError, match="subclass of Clip"):
        Clip.register("test_wrong_axis")(Uniform)
    assert "test_wrong_axis" not in Clip.names()


@pytest.mark.parametrize("axis", AXES, ids=lambda a: a.__name__)
def test_unknown_name_lists_valid_names(axis):
    with pytest.raises(KeyError) as err:
        axis.get("no_such_strategy")
    msg = str(err.value)
    assert "no_such_strategy" in msg
    for name in EXPECTED[axis]:
        assert name in msg


def _parse(base, value: dict):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "comp")
    cfg = parser.parse_object({"comp": value})
    return parser.instantiate(cfg).comp


def test_yaml_short_class_path_with_init_args():
    comp = _parse(Reweight, {"class_path": "EntropyGuidedPAR", "init_args": {"delta": 0.3, "step": 0.1}})
    assert type(comp).__name__ == "EntropyGuidedPAR"
    assert (comp.delta, comp.step, comp.lam0) == (0.3, 0.1, 0.0)
    clip = _parse(Clip, {"class_path": "PPOClip", "init_args": {"eps_high": 0.28, "dual_clip": None}})
    assert (clip.eps_low, clip.eps_high, clip.dual_clip) == (0.2, 0.28, None)
    kl = _parse(KLPenalty, {"class_path": "rlvr_lightning.components.KL", "init_args": {"kind": "k1"}})
    assert (kl.kind, kl.coef) == ("k1", 0.001)


def test_yaml_user_subclass_and_type_errors():
    comp = _parse(Reweight, {"class_path": "HalveAll", "init_args": {"factor": 0.1}})
    assert isinstance(comp, HalveAll) and comp.factor == 0.1
    with pytest.raises(Exception, match="kind"):
        _parse(KLPenalty, {"class_path": "KL", "init_args": {"kind": "k4"}})
