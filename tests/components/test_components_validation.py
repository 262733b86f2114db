"""Hyper-parameter validation: a bad value fails at construction naming the option and its valid range."""

from __future__ import annotations

import inspect

import pytest
from _comp_inputs import all_builtin_params

from rlvr_lightning.components import (
    CISPO,
    GRPO,
    GSPO,
    KL,
    PAR,
    AdaptiveEntropyBonus,
    ClipCov,
    ConstantEntropyBonus,
    EntropyGuidedPAR,
    HighEntropyTokens,
    KLCov,
    PPOClip,
    RandomPositiveDrop,
    ReinforcePPBaseline,
    SeqMeanTokenSumNorm,
    StagePAR,
)

BAD = [
    (PPOClip, {"eps_low": 1.0}, r"eps_low must be in \[0, 1\)"),
    (PPOClip, {"eps_low": -0.1}, r"eps_low must be in \[0, 1\)"),
    (PPOClip, {"eps_high": -0.01}, r"eps_high must be in \[0, inf\)"),
    (PPOClip, {"dual_clip": 1.0}, r"dual_clip must be in \(1, inf\)"),
    (CISPO, {"eps_low": 1.5}, r"eps_low must be in \[0, 1\]"),
    (GSPO, {"eps_high": -1.0}, "eps_high"),
    (GRPO, {"eps": 0.0}, r"eps must be in \(0, inf\)"),
    (ReinforcePPBaseline, {"eps": -1.0}, "eps"),
    (PAR, {"lam": 1.2}, r"lam must be in \[0, 1\]"),
    (PAR, {"lam": float("nan")}, "lam"),
    (StagePAR, {"start": 1.0}, r"start must be in \[0, 1\)"),
    (EntropyGuidedPAR, {"lam0": -0.1}, r"lam0 must be in \[0, 1\]"),
    (EntropyGuidedPAR, {"step": 2.0}, r"step must be in \[0, 1\]"),
    (EntropyGuidedPAR, {"delta": -1.0}, "delta"),
    (RandomPositiveDrop, {"frac": 1.5}, r"frac must be in \[0, 1\]"),
    (HighEntropyTokens, {"rho": 0.0}, r"rho must be in \(0, 1\]"),
    (ClipCov, {"clip_ratio": 2.0}, "clip_ratio"),
    (ClipCov, {"lower": 5.0, "upper": 1.0}, r"upper must be in \(5, inf\)"),
    (KLCov, {"k_ratio": 0.0}, "k_ratio"),
    (KLCov, {"coef": -1.0}, "coef"),
    (KL, {"kind": "k4"}, "unknown kind 'k4'; valid choices: 'k1', 'k2', 'k3'"),
    (KL, {"coef": -0.1}, "coef"),
    (ConstantEntropyBonus, {"alpha": float("inf")}, "alpha"),
    (AdaptiveEntropyBonus, {"alpha0": 0.5, "alpha_max": 0.1}, r"alpha0 must be in \[0, 0.1\]"),
    (AdaptiveEntropyBonus, {"alpha_min": 0.1, "alpha_max": 0.01}, r"alpha_max must be >= alpha_min = 0.1, got 0.01"),
    (AdaptiveEntropyBonus, {"alpha_min": 0.2, "alpha_max": 0.1}, "alpha_max"),
    (AdaptiveEntropyBonus, {"step": -0.1}, "step"),
    (SeqMeanTokenSumNorm, {"max_len": 0}, "max_len must be an integer >= 1"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"), BAD, ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in BAD]
)
def test_bad_hyper_parameter_names_option(cls, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        cls(**kwargs)
    assert cls.__name__ in str(err.value)


def test_parameter_sets_of_the_paper_are_valid():
    for kw in ({}, {"eps_high": 0.28}, {"eps_low": 0.28}, {"eps_low": 0.12}, {"dual_clip": None}):
        PPOClip(**kw)
    ConstantEntropyBonus(alpha=-0.001)  # a negative coefficient is allowed (it speeds the collapse)
    PAR(lam=0.0), PAR(lam=1.0)


@pytest.mark.parametrize(("axis", "name"), all_builtin_params(), ids=lambda p: getattr(p, "__name__", p))
def test_init_arguments_are_type_hinted(axis, name):
    """LightningCLI builds components from YAML through these hints."""
    sig = inspect.signature(axis.get(name).__init__)
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.annotation is not inspect.Parameter.empty, f"{name}: {p.name} has no type hint"
