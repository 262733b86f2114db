"""The composed ``Loss`` without a Trainer: regression values of the pre-refactor module, a hand composition from
``rlvr_lightning.functional``, and its plain-loop behaviour (defaults, errors, state, micro-batch invariance).

``loss_reference.json`` holds regression values recorded from the pre-refactor module (``RLVRModule._update``
driving the tiny policy on a fixed batch, see its ``_doc``); the inputs come from ``_loss_inputs.py``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from _loss_inputs import (
    CASES, EPOCH, MEASURED_ENTROPY, MICRO, STEP, TOTAL_EPOCHS, TOTAL_STEPS, grad_summary, make_batch,
    make_components, policy_logprobs, side_inputs, tiny_policy,
)
from rlvr_lightning import functional as F
from rlvr_lightning.components import KL, PAR, ConstantEntropyBonus, EntropyGuidedPAR, Loss, SeqMeanTokenSum

REFERENCE = json.loads((Path(__file__).with_name("loss_reference.json")).read_text())["cases"]
CONTEXT = dict(step=STEP, total_steps=TOTAL_STEPS, epoch=EPOCH, total_epochs=TOTAL_EPOCHS,
               measured_entropy=MEASURED_ENTROPY)


def _close(actual: Any, expected: Any, what: str) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6, msg=what)


@functools.cache
def _policy_and_inputs() -> tuple[Any, Any, dict[str, Tensor]]:
    torch.manual_seed(0)
    policy = tiny_policy()
    batch = make_batch(policy.config.vocab_size)
    return policy, batch, side_inputs(policy, batch)


def test_reference_covers_every_case():
    assert set(REFERENCE) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_matches_the_pre_refactor_module(case):
    """Two micro-batches through the tiny policy: loss, statistics and gradients as the old module gave them."""
    policy, batch, side = _policy_and_inputs()
    policy.zero_grad(set_to_none=True)
    loss_fn = Loss(**make_components(case))
    world = CASES[case].get("world", 1)
    mask = batch.response_mask
    advantages = loss_fn.advantages(batch.scores, batch.group_ids, mask)
    norms = loss_fn.normalizers(mask)
    total, sums, grads_logp, grads_ent = 0.0, {}, [], []
    for micro, idx in enumerate(torch.arange(len(batch)).split(MICRO)):
        logp, ent = policy_logprobs(policy, batch.select(idx))
        logp.retain_grad()
        ent.retain_grad()
        loss, stats = loss_fn(
            logp, side["old_logp"][idx], advantages[idx], mask[idx], ent,
            ref_logp=side["ref_logp"][idx], tis=side["tis"][idx] if CASES[case].get("tis") else None,
            sample_key=micro, world_size=world, **norms, **CONTEXT,
        )
        loss.backward()
        total += float(loss.detach()) / world
        share = mask[idx].sum() / norms["num_tokens"]
        for k, v in stats.items():
            assert not v.requires_grad
            sums[k] = sums.get(k, 0.0) + float(v) * float(share)
        grads_logp.append(logp.grad)
        grads_ent.append(ent.grad if ent.grad is not None else torch.zeros_like(ent))
    ref = REFERENCE[case]
    _close(total, ref["loss"], f"{case}: loss")
    assert set(sums) == set(ref["stats"])
    for k, v in ref["stats"].items():
        _close(sums[k], v, f"{case}: {k}")
    _close(torch.cat(grads_logp), ref["grad_logp"], f"{case}: d loss / d logp")
    _close(torch.cat(grads_ent), ref["grad_entropy"], f"{case}: d loss / d entropy")
    _close(grad_summary(policy), ref["grad"], f"{case}: parameter gradient")


# -- an independent composition from the functional ops ------------------------------------------------------
def _hand_advantages(name: str, kw: dict, scores: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor:
    if name == "ReinforcePPBaseline":
        return F.reinforce_pp_baseline_advantages(scores, group_ids, mask, eps=kw.get("eps", 1e-8)) * mask
    seq = {
        "GRPO": lambda: F.grpo_advantages(scores, group_ids, scale_by_std=True, eps=kw.get("eps", 1e-6)),
        "DrGRPO": lambda: F.grpo_advantages(scores, group_ids, scale_by_std=False),
        "RLOO": lambda: F.rloo_advantages(scores, group_ids),
        "SignedReward": lambda: F.signed_reward_advantages(scores, threshold=kw.get("threshold", 0.5)),
    }[name]()
    return seq[:, None] * mask


def _hand_surrogate(name: str, kw: dict, logp: Tensor, old: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    if name == "PPOClip":
        return F.clipped_surrogate(logp, old, adv, mask, eps_low=kw.get("eps_low", 0.2),
                                   eps_high=kw.get("eps_high", 0.2), dual_clip=kw.get("dual_clip", 3.0))[0]
    if name == "NoClip":
        return F.unclipped_surrogate(logp, old, adv, mask)[0]
    if name == "CISPO":
        return F.cispo_surrogate(logp, old, adv, mask, eps_low=1.0, eps_high=0.28)[0]
    return F.gspo_surrogate(logp, old, adv, mask, eps_low=3e-4, eps_high=4e-4)[0]


def _hand_weights(name: str, kw: dict, adv: Tensor, ent: Tensor, mask: Tensor) -> Tensor:
    if name in ("PAR", "EntropyGuidedPAR"):
        return F.par_weights(adv, mask, lam=kw.get("lam", kw.get("lam0", 0.5 if name == "PAR" else 0.0)))
    if name == "PositiveOnly":
        return ((adv >= 0) & mask).float()
    if name == "NegativeOnly":
        return ((adv <= 0) & mask).float()
    if name == "HighEntropyTokens":
        return F.top_entropy_mask(ent, mask, rho=kw["rho"]).float()
    return mask.float()  # Uniform, KLCov


def _hand_loss(spec: dict, x: dict[str, Tensor]) -> Tensor:
    """The loss of the whole batch composed step by step from ``rlvr_lightning.functional``."""
    mask, logp, ent = x["mask"], x["logp"], x["entropy"]
    adv = _hand_advantages(*spec["advantage"], x["scores"], x["group_ids"], mask)
    loss = _hand_surrogate(*spec["clip"], logp, x["old_logp"], adv, mask)
    loss = loss * _hand_weights(*spec["reweight"], adv, ent.detach(), mask)
    if spec["reweight"][0] == "KLCov":
        kw = spec["reweight"][1]
        loss = loss + F.kl_cov_penalty(logp, x["old_logp"], adv, mask, k_ratio=kw.get("k_ratio", 2e-4),
                                       coef=kw.get("coef", 1.0))
    if spec.get("tis"):
        loss = loss * x["tis"]
    if spec["kl"][0] == "KL":
        kw = spec["kl"][1]
        loss = loss + kw["coef"] * F.kl_penalty(logp, x["ref_logp"], kind=kw["kind"]) * mask
    if spec["entropy_bonus"][0] != "NoEntropyBonus":
        alpha = spec["entropy_bonus"][1].get("alpha", spec["entropy_bonus"][1].get("alpha0"))
        loss = loss - alpha * ent * mask
    name, kw = spec["aggregation"]
    mode = {"TokenMean": "token-mean", "SeqMeanTokenSum": "seq-mean-token-sum",
            "SeqMeanTokenMean": "seq-mean-token-mean", "SeqMeanTokenSumNorm": "seq-mean-token-sum-norm"}[name]
    return F.aggregate(loss, mask, mode=mode, max_len=kw.get("max_len")) * spec.get("world", 1)


HAND_CASES = sorted(c for c in CASES if not any(
    CASES[c].get("reweight", ("",))[0] == r for r in ("EpochPAR", "StagePAR", "RandomPositiveDrop", "ClipCov")))


def _random_inputs(seed: int = 0) -> dict[str, Tensor]:
    batch = make_batch(vocab=50)
    g = torch.Generator().manual_seed(seed)
    shape = batch.response_mask.shape
    logp = (-torch.rand(shape, generator=g) * 3).requires_grad_()
    x = {"mask": batch.response_mask, "scores": batch.scores, "group_ids": batch.group_ids, "logp": logp,
         "old_logp": logp.detach() + 0.5 * torch.randn(shape, generator=g),
         "ref_logp": logp.detach() + 0.3 * torch.randn(shape, generator=g),
         "tis": torch.rand(shape, generator=g) * 2, "entropy": (torch.rand(shape, generator=g) * 2).requires_grad_()}
    return x


@pytest.mark.parametrize("case", HAND_CASES)
def test_loss_matches_a_hand_composition_of_the_functional_ops(case):
    from _loss_inputs import DEFAULTS

    spec = {**DEFAULTS, **CASES[case]}
    x = _random_inputs()
    expected = _hand_loss(spec, x)
    want = torch.autograd.grad(expected, [x["logp"], x["entropy"]], allow_unused=True, materialize_grads=True)
    loss_fn = Loss(**make_components(case))
    adv = loss_fn.advantages(x["scores"], x["group_ids"], x["mask"])
    loss, _ = loss_fn(x["logp"], x["old_logp"], adv, x["mask"], x["entropy"], ref_logp=x["ref_logp"],
                      tis=x["tis"] if spec.get("tis") else None, world_size=spec.get("world", 1))
    got = torch.autograd.grad(loss, [x["logp"], x["entropy"]], allow_unused=True, materialize_grads=True)
    _close(loss, expected, f"{case}: loss")
    _close(got[0], want[0], f"{case}: d loss / d logp")
    _close(got[1], want[1], f"{case}: d loss / d entropy")


# -- plain-loop behaviour -------------------------------------------------------------------------------------
def test_defaults_are_the_modules_and_tensors_alone_suffice():
    x = _random_inputs()
    loss_fn = Loss()
    assert [type(c).__name__ for c in loss_fn.components().values()] == [
        "GRPO", "PPOClip", "Uniform", "TokenMean", "NoKL", "NoEntropyBonus"]
    adv = loss_fn.advantages(x["scores"], x["group_ids"], x["mask"])
    loss, stats = loss_fn(x["logp"], x["old_logp"], adv, x["mask"])
    loss.backward()
    assert loss.dim() == 0 and x["logp"].grad is not None and "clip_frac" in stats
    assert dict(loss_fn.state_dict()) == {}  # no parameters or buffers: checkpoints do not change


def test_missing_inputs_are_named():
    x = _random_inputs()
    adv = torch.ones_like(x["old_logp"])
    with pytest.raises(ValueError, match="entropy"):
        Loss(entropy_bonus=ConstantEntropyBonus())(x["logp"], x["old_logp"], adv, x["mask"])
    with pytest.raises(ValueError, match="ref_logp"):
        Loss(kl=KL())(x["logp"], x["old_logp"], adv, x["mask"], x["entropy"])


def test_kl_ref_is_the_estimate_without_its_coefficient():
    x = _random_inputs()
    adv = torch.zeros_like(x["old_logp"])
    stats = [Loss(kl=KL(kind="k3", coef=c))(x["logp"], x["old_logp"], adv, x["mask"], ref_logp=x["ref_logp"])[1]
             for c in (0.1, 0.5)]
    _close(stats[0]["kl_ref"], stats[1]["kl_ref"], "kl_ref")
    assert float(stats[0]["kl_ref"]) > 0


def test_micro_batches_with_global_normalizers_sum_to_the_big_batch():
    x = _random_inputs()
    loss_fn = Loss(reweight=PAR(lam=0.3), aggregation=SeqMeanTokenSum())
    adv = loss_fn.advantages(x["scores"], x["group_ids"], x["mask"])
    big, _ = loss_fn(x["logp"], x["old_logp"], adv, x["mask"], x["entropy"])
    norms = loss_fn.normalizers(x["mask"])
    parts = [loss_fn(x["logp"][i], x["old_logp"][i], adv[i], x["mask"][i], x["entropy"][i], **norms)[0]
             for i in torch.arange(len(adv)).split(4)]
    _close(sum(parts), big, "accumulated loss")
    assert norms["num_tokens"] == x["mask"].sum() and norms["num_seqs"] == x["mask"].any(-1).sum()
    assert Loss().normalizers(x["mask"])["num_seqs"] is None  # token-mean does not divide by sequences


def test_component_state_round_trip_and_stepping():
    loss_fn = Loss(reweight=EntropyGuidedPAR(delta=0.2, step=0.1, lam0=0.5))
    loss_fn.update(1.0)  # above delta: lambda rises
    assert loss_fn.log_values() == {"lambda": pytest.approx(0.6)}
    state = loss_fn.component_state_dict()
    assert state["reweight"] == {"lam": pytest.approx(0.6)} and state["advantage"] == {}
    fresh = Loss(reweight=EntropyGuidedPAR(delta=0.2, step=0.1, lam0=0.5))
    fresh.load_component_state_dict(state)
    assert fresh.reweight.lam == pytest.approx(0.6)
    with pytest.raises(KeyError, match="no loss component"):
        fresh.load_component_state_dict({"nope": {}})
