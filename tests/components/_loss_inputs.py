"""Inputs of the loss regression tests: a fixed rollout batch for the tiny policy, and the component combinations.

The same builders made the recorded values in ``loss_reference.json`` (pre-refactor module) and rebuild the inputs in
``test_loss.py``, so both see identical tensors. Shapes: B = 6 sequences (3 prompts x 2), T = 7 response tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlvr_lightning import components as C
from rlvr_lightning import functional as F
from rlvr_lightning.data.types import RolloutBatch

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "assets" / "tiny-qwen2")
P, G, TP, T = 3, 2, 5, 7
B = P * G
MICRO = 3  # two micro-batches of three sequences
# the step context every case runs in (optimizer step 3 of 12, data epoch 2 of 4)
STEP, TOTAL_STEPS, EPOCH, TOTAL_EPOCHS, MEASURED_ENTROPY = 3, 12, 2, 4, 0.7
TIS_CAP = 2.0

# component combinations: name -> {axis: (class name, init args)}, unnamed axes keep RLVRModule's defaults;
# "tis" adds rollout log-probs (truncated importance sampling), "world" a data-parallel multiplier
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "drgrpo": {"advantage": ("DrGRPO", {})},
    "rloo": {"advantage": ("RLOO", {})},
    "reinforce_pp": {"advantage": ("ReinforcePPBaseline", {})},
    "w_reinforce": {"advantage": ("SignedReward", {}), "clip": ("NoClip", {}), "reweight": ("PAR", {"lam": 0.1})},
    "clip_higher": {"clip": ("PPOClip", {"eps_low": 0.2, "eps_high": 0.28})},
    "clip_lower": {"clip": ("PPOClip", {"eps_low": 0.28, "eps_high": 0.2})},
    "clip_tighter": {"clip": ("PPOClip", {"eps_low": 0.12, "eps_high": 0.2})},
    "ppo_no_dual": {"clip": ("PPOClip", {"dual_clip": None})},
    "clip_free": {"clip": ("NoClip", {})},
    "cispo": {"clip": ("CISPO", {})},
    "gspo": {"clip": ("GSPO", {})},
    "par": {"reweight": ("PAR", {"lam": 0.5})},
    "par_constant": {"reweight": ("PAR", {"lam": 0.1})},
    "par_entropy": {"reweight": ("EntropyGuidedPAR", {"delta": 0.2, "step": 0.05, "lam0": 0.0})},
    "par_entropy_lam": {"reweight": ("EntropyGuidedPAR", {"delta": 0.3, "step": 0.05, "lam0": 0.35})},
    "par_epoch": {"reweight": ("EpochPAR", {})},
    "par_stage": {"reweight": ("StagePAR", {})},
    "positive_only": {"reweight": ("PositiveOnly", {})},
    "negative_only": {"reweight": ("NegativeOnly", {})},
    "random_positive_drop": {"reweight": ("RandomPositiveDrop", {"frac": 0.2})},
    "random_positive_drop_half": {"reweight": ("RandomPositiveDrop", {"frac": 0.5, "seed": 3})},
    "high_entropy": {"reweight": ("HighEntropyTokens", {"rho": 0.2})},
    "clip_cov": {"reweight": ("ClipCov", {"clip_ratio": 0.0002, "lower": 1.0, "upper": 5.0})},
    "clip_cov_wide": {"reweight": ("ClipCov", {"clip_ratio": 0.3, "lower": -5.0, "upper": 5.0})},
    "kl_cov": {"reweight": ("KLCov", {"k_ratio": 0.0002, "coef": 1.0})},
    "kl_cov_wide": {"reweight": ("KLCov", {"k_ratio": 0.2, "coef": 0.5})},
    "seq_mean_token_sum": {"aggregation": ("SeqMeanTokenSum", {})},
    "seq_mean_token_mean": {"aggregation": ("SeqMeanTokenMean", {})},
    "seq_mean_token_sum_norm": {"aggregation": ("SeqMeanTokenSumNorm", {"max_len": 10})},
    "kl_k1": {"kl": ("KL", {"kind": "k1", "coef": 0.1})},
    "kl_k2": {"kl": ("KL", {"kind": "k2", "coef": 0.1})},
    "kl_k3": {"kl": ("KL", {"kind": "k3", "coef": 0.001})},
    "kl_zero_coef": {"kl": ("KL", {"kind": "k3", "coef": 0.0})},
    "entropy_bonus": {"entropy_bonus": ("ConstantEntropyBonus", {"alpha": 0.01})},
    "entropy_penalty": {"entropy_bonus": ("ConstantEntropyBonus", {"alpha": -0.02})},
    "adaptive_entropy": {"entropy_bonus": ("AdaptiveEntropyBonus", {"alpha0": 0.005})},
    "tis": {"tis": True},
    "world2": {"world": 2, "aggregation": ("SeqMeanTokenMean", {})},
    "everything": {
        "advantage": ("RLOO", {}), "clip": ("CISPO", {}), "reweight": ("KLCov", {"k_ratio": 0.2}),
        "aggregation": ("SeqMeanTokenSum", {}), "kl": ("KL", {"kind": "k2", "coef": 0.05}),
        "entropy_bonus": ("ConstantEntropyBonus", {"alpha": 0.01}), "tis": True,
    },
    "par_tis_kl_gspo": {
        "clip": ("GSPO", {}), "reweight": ("EntropyGuidedPAR", {"lam0": 0.4}),
        "kl": ("KL", {"kind": "k1", "coef": 0.2}), "tis": True, "aggregation": ("SeqMeanTokenSumNorm", {"max_len": 8}),
    },
}

DEFAULTS = {"advantage": ("GRPO", {}), "clip": ("PPOClip", {}), "reweight": ("Uniform", {}),
            "aggregation": ("TokenMean", {}), "kl": ("NoKL", {}), "entropy_bonus": ("NoEntropyBonus", {})}


def make_components(case: str) -> dict[str, Any]:
    """Fresh component instances of ``case``, by axis name."""
    spec = {**DEFAULTS, **{k: v for k, v in CASES[case].items() if k in DEFAULTS}}
    return {axis: getattr(C, name)(**kwargs) for axis, (name, kwargs) in spec.items()}


def tiny_policy() -> nn.Module:
    """The tiny Qwen2 policy with seeded random weights."""
    from rlvr_lightning.models import load_causal_lm

    return load_causal_lm(TINY, from_scratch=True, seed=0)


def make_batch(vocab: int, seed: int = 0) -> RolloutBatch:
    """A fixed batch: left-padded prompts, right-padded responses of several lengths, one zero-variance group."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.tensor([5, 3, 4, 5, 2, 5])
    resp_len = torch.tensor([7, 6, 5, 7, 3, 4])
    prompt_mask = torch.arange(TP).flip(0).unsqueeze(0) < prompt_len.unsqueeze(1)
    response_mask = torch.arange(T).unsqueeze(0) < resp_len.unsqueeze(1)
    prompt_ids = torch.randint(2, vocab, (B, TP), generator=g) * prompt_mask
    response_ids = torch.randint(2, vocab, (B, T), generator=g) * response_mask
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids, response_mask=response_mask,
        group_ids=torch.arange(P).repeat_interleave(G), scores=torch.tensor([1.0, 0.0, 0.5, 0.5, 0.25, 1.0]),
        truncated=resp_len == T,
    )


def policy_logprobs(policy: nn.Module, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
    """Log-probs and entropy of the response tokens under ``policy`` (with gradients), each shape ``(B, T)``."""
    input_ids, attention_mask, position_ids = batch.model_inputs()
    out = policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                 logits_to_keep=T + 1)
    return F.logprobs_and_entropy(out.logits[:, -(T + 1):-1], batch.response_ids, temperature=1.0)


def side_inputs(policy: nn.Module, batch: RolloutBatch, seed: int = 1) -> dict[str, Tensor]:
    """``old_logp``, ``ref_logp`` and capped TIS weights, each ``(B, T)``: the policy's log-probs, perturbed."""
    with torch.no_grad():
        logp, _ = policy_logprobs(policy, batch)
    g = torch.Generator().manual_seed(seed)
    old = logp + 0.6 * torch.randn(logp.shape, generator=g)
    old[1, :2] = logp[1, :2] - 1.5  # ratio e^1.5 on a negative sequence: the dual clip bites
    ref = logp + 0.1 * torch.randn(logp.shape, generator=g)
    rollout = old + 0.3 * torch.randn(logp.shape, generator=g)
    tis = torch.exp((old - rollout).clamp(-20, 20)).clamp(max=TIS_CAP)
    return {"old_logp": old, "ref_logp": ref, "rollout_logprobs": rollout, "tis": tis}


def grad_summary(policy: nn.Module) -> list[float]:
    """The policy gradient as ``[norm, <g, u1>, <g, u2>]`` with two fixed random directions ``u``."""
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                      for p in policy.parameters()]).double()
    g = torch.Generator().manual_seed(123)
    u = torch.randn((2, flat.numel()), generator=g, dtype=torch.float64)
    return [float(flat.norm()), float(u[0] @ flat), float(u[1] @ flat)]
