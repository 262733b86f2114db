"""Parity with verl 0.9.1's ``core_algos`` and ``torch_functional``: same inputs, same numbers and gradients.

verl is installed without its heavy dependencies (``pip install --no-deps verl==0.9.1``); its
``core_algos.py`` is loaded from the installed files with light stand-ins for the imports it does not use in
these functions (ray, tensordict, omegaconf, its config dataclasses). Skipped when the verl files are not
installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch

import rlvr_lightning.functional as F

VERL_VERSION = "0.9.1"


def _load_verl():
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        return None, "verl is not installed (pip install --no-deps verl==0.9.1)"
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "trainer" / "ppo" / "core_algos.py").exists():
        return None, f"verl at {root} has no trainer/ppo/core_algos.py"

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    def load(name, rel):
        s = importlib.util.spec_from_file_location(name, root / rel)
        m = importlib.util.module_from_spec(s)
        sys.modules[name] = m
        s.loader.exec_module(m)
        return m

    class AlgoConfig:  # stands in for verl.trainer.config.AlgoConfig (only used in isinstance checks)
        pass

    class ActorConfig(dict):  # stands in for verl.workers.config.ActorConfig: attribute access + .get
        __getattr__ = dict.get

    stubs = {
        "verl": module("verl", __path__=[str(root)]),
        "verl.utils": module("verl.utils", __path__=[str(root / "utils")]),
        "verl.utils.device": module(
            "verl.utils.device", get_device_name=lambda: "cpu", get_torch_device=lambda: torch.cpu
        ),
        "verl.trainer": module("verl.trainer", __path__=[]),
        "verl.trainer.config": module("verl.trainer.config", AlgoConfig=AlgoConfig),
        "verl.workers": module("verl.workers", __path__=[]),
        "verl.workers.config": module("verl.workers.config", ActorConfig=ActorConfig),
    }
    for name, attrs in (("tensordict", {"TensorDict": dict}), ("omegaconf", {"DictConfig": dict})):
        if importlib.util.find_spec(name) is None:
            stubs[name] = module(name, **attrs)
    if "transformers" not in sys.modules:
        stubs["transformers"] = module("transformers", PreTrainedTokenizer=object)
    with mock.patch.dict(sys.modules, stubs):
        try:
            groupwise = load("verl.utils.groupwise", "utils/groupwise.py")
            sys.modules["verl.utils"].__dict__.update(
                as_torch_index=groupwise.as_torch_index, group_mean_std=groupwise.group_mean_std
            )
            load("verl.utils.import_utils", "utils/import_utils.py")
            vf = load("verl.utils.torch_functional", "utils/torch_functional.py")
            sys.modules["verl.utils"].torch_functional = vf
            core = load("verl.trainer.ppo.core_algos", "trainer/ppo/core_algos.py")
        except Exception as err:  # an incompatible verl layout: report why instead of failing
            return None, f"verl core_algos could not be loaded: {type(err).__name__}: {err}"
    return types.SimpleNamespace(core=core, vf=vf, ActorConfig=ActorConfig), ""


VERL, REASON = _load_verl()
pytestmark = pytest.mark.skipif(VERL is None, reason=REASON)


def _batch(seed=0, b=12, t=9, g=4, dtype=torch.float64, noise=0.4):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    scores = torch.randint(0, 3, (b,), generator=gen).to(dtype) / 2
    group_ids = torch.arange(b) // g
    perm = torch.randperm(b, generator=gen)  # groups need not be contiguous
    old = -torch.rand(b, t, generator=gen, dtype=dtype) * 3
    logp = old + torch.randn(b, t, generator=gen, dtype=dtype) * noise
    adv = torch.randn(b, t, generator=gen, dtype=dtype)
    return scores[perm], group_ids[perm], mask[perm], logp, old, adv


def _actor(**kw):
    cfg = VERL.ActorConfig(clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=None, global_batch_info={})
    cfg.update(kw)
    return cfg


# ---------------------------------------------------------------------------------------------- advantages
@pytest.mark.parametrize("scale", [True, False])
def test_grpo_matches_verl(scale):
    scores, gid, mask, *_ = _batch()
    ref, _ = VERL.core.compute_grpo_outcome_advantage(
        scores[:, None]
        * torch.eye(1, mask.shape[1], dtype=scores.dtype).expand(len(scores), -1).contiguous(),
        mask.to(scores.dtype),
        gid.numpy(),
        epsilon=1e-6,
        norm_adv_by_std_in_grpo=scale,
    )
    ours = F.grpo_advantages(scores, gid, scale_by_std=scale)[:, None] * mask
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_grpo_singleton_differs_from_verl_as_documented():
    scores, gid = torch.tensor([0.7, 1.0, 0.0], dtype=torch.float64), torch.tensor([5, 9, 9])
    rewards = torch.zeros(3, 2, dtype=torch.float64)
    rewards[:, 0] = scores
    ref, _ = VERL.core.compute_grpo_outcome_advantage(rewards, torch.ones(3, 2), gid.numpy())
    assert ref[0, 0] == pytest.approx(0.7 / (1 + 1e-6))  # verl: mean 0, std 1 for a singleton
    assert F.grpo_advantages(scores, gid)[0] == 0  # here: 0


def test_rloo_matches_verl():
    scores, gid, mask, *_ = _batch(1)
    rewards = torch.zeros(mask.shape, dtype=scores.dtype)
    rewards[:, 0] = scores
    ref, _ = VERL.core.compute_rloo_outcome_advantage(rewards, mask.to(scores.dtype), gid.numpy())
    torch.testing.assert_close(F.rloo_advantages(scores, gid)[:, None] * mask, ref, atol=1e-6, rtol=0)


def test_reinforce_pp_baseline_matches_verl():
    scores, gid, mask, *_ = _batch(2)
    rewards = torch.zeros(mask.shape, dtype=scores.dtype)
    rewards[:, 0] = scores
    ref, _ = VERL.core.compute_reinforce_plus_plus_baseline_outcome_advantage(
        rewards, mask.to(scores.dtype), gid.numpy()
    )
    torch.testing.assert_close(F.reinforce_pp_baseline_advantages(scores, gid, mask), ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- policy losses
def _loss_and_grad(fn, logp):
    lp = logp.clone().requires_grad_(True)
    loss = fn(lp)
    (g,) = torch.autograd.grad(loss, lp)
    return loss.detach(), g


@pytest.mark.parametrize("eps_low,eps_high,c", [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.1, 0.3, 1.5)])
def test_vanilla_ppo_with_dual_clip_matches_verl(eps_low, eps_high, c):
    _, _, mask, logp, old, adv = _batch(3, noise=1.2)  # ratios up to e^3: the dual clip at c = 3 is reached
    cfg = _actor(clip_ratio_low=eps_low, clip_ratio_high=eps_high, clip_ratio_c=c)
    mf = mask.to(logp.dtype)
    ref_loss, ref_g = _loss_and_grad(
        lambda lp: VERL.core.compute_policy_loss_vanilla(old, lp, adv, mf, "token-mean", cfg)[0], logp
    )
    _, metrics = VERL.core.compute_policy_loss_vanilla(old, logp, adv, mf, "token-mean", cfg)

    def ours(lp):
        return F.aggregate(
            F.clipped_surrogate(lp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, dual_clip=c)[0], mask
        )

    loss, g = _loss_and_grad(ours, logp)
    torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(g, ref_g, atol=1e-10, rtol=1e-9)
    _, st = F.clipped_surrogate(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, dual_clip=c)
    assert st["clip_frac"].item() == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-6)
    assert st["dual_clip_frac"].item() == pytest.approx(metrics["actor/pg_clipfrac_lower"], abs=1e-6)
    assert st["approx_kl"].item() == pytest.approx(metrics["actor/ppo_kl"], abs=1e-6)
    assert st["clip_frac"] > 0 and st["dual_clip_frac"] > 0


def test_cispo_matches_verl():
    _, _, mask, logp, old, adv = _batch(4)
    cfg = _actor(clip_ratio_low=0.2, clip_ratio_high=0.28)
    mf = mask.to(logp.dtype)
    ref_loss, ref_g = _loss_and_grad(
        lambda lp: VERL.core.compute_policy_loss_cispo(old, lp, adv, mf, "token-mean", cfg)[0], logp
    )
    loss, g = _loss_and_grad(
        lambda lp: F.aggregate(F.cispo_surrogate(lp, old, adv, mask, eps_low=0.2, eps_high=0.28)[0], mask),
        logp,
    )
    torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(g, ref_g, atol=1e-10, rtol=1e-9)
    _, metrics = VERL.core.compute_policy_loss_cispo(old, logp, adv, mf, "token-mean", cfg)
    _, st = F.cispo_surrogate(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert st["clip_frac"].item() == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-6)


def test_gspo_matches_verl():
    _, _, mask, logp, old, _ = _batch(5)
    logp = old + (logp - old) * 1e-3  # sequence ratios near 1 so both sides of the tiny clip range occur
    adv = torch.randn(mask.shape[0], 1, dtype=logp.dtype, generator=torch.Generator().manual_seed(5))
    adv = adv.expand(mask.shape).contiguous()
    cfg = _actor(clip_ratio_low=3e-4, clip_ratio_high=4e-4)
    mf = mask.to(logp.dtype)
    for mode in ("seq-mean-token-mean", "token-mean"):
        ref_loss, ref_g = _loss_and_grad(
            lambda lp: VERL.core.compute_policy_loss_gspo(old, lp, adv, mf, mode, cfg)[0], logp
        )
        loss, g = _loss_and_grad(
            lambda lp: F.aggregate(F.gspo_surrogate(lp, old, adv, mask)[0], mask, mode=mode), logp
        )
        # verl divides per-row sums by (length + 1e-8): a relative difference of about 1e-9
        torch.testing.assert_close(loss, ref_loss, atol=1e-8, rtol=1e-7)
        torch.testing.assert_close(g, ref_g, atol=1e-8, rtol=1e-7)
    _, metrics = VERL.core.compute_policy_loss_gspo(old, logp, adv, mf, "token-mean", cfg)
    _, st = F.gspo_surrogate(logp, old, adv, mask)
    assert st["clip_frac"].item() == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-6)
    assert 0 < st["clip_frac"] < 1


# ---------------------------------------------------------------------------------------------- aggregation,
@pytest.mark.parametrize("mode", F.AGG_MODES)
def test_aggregate_matches_verl_agg_loss(mode):
    _, _, mask, logp, _, _ = _batch(6)
    mask[3] = False  # an empty row does not count as a sequence
    mf = mask.to(logp.dtype)
    kw = {"loss_scale_factor": 16} if mode == "seq-mean-token-sum-norm" else {}
    ref_loss, ref_g = _loss_and_grad(lambda x: VERL.core.agg_loss(x, mf, mode, **kw), logp)
    loss, g = _loss_and_grad(lambda x: F.aggregate(x, mask, mode=mode, max_len=16), logp)
    torch.testing.assert_close(loss, ref_loss, atol=1e-8, rtol=1e-7)  # verl adds 1e-8 to per-row token counts
    torch.testing.assert_close(g, ref_g, atol=1e-8, rtol=1e-7)


def test_aggregate_global_normalizers_match_verl():
    _, _, mask, logp, _, _ = _batch(7)
    mf = mask.to(logp.dtype)
    ref = VERL.core.agg_loss(logp, mf, "token-mean", batch_num_tokens=123)
    torch.testing.assert_close(F.aggregate(logp, mask, mode="token-mean", num_tokens=123), ref)
    ref = VERL.core.agg_loss(logp, mf, "seq-mean-token-mean", global_batch_size=40)
    torch.testing.assert_close(
        F.aggregate(logp, mask, mode="seq-mean-token-mean", num_seqs=40), ref, atol=1e-8, rtol=1e-7
    )


@pytest.mark.parametrize("kind,verl_kind", [("k1", "k1"), ("k2", "k2"), ("k3", "low_var_kl")])
def test_kl_penalty_matches_verl(kind, verl_kind):
    _, _, _, logp, ref_logp, _ = _batch(8)
    logp = logp.clone()
    logp[0, :3] = torch.tensor([-40.0, 30.0, 5.0])  # exercises the clamps of low_var_kl
    ref, ref_g = _loss_and_grad(lambda x: VERL.core.kl_penalty(x, ref_logp, verl_kind).sum(), logp)
    ours, g = _loss_and_grad(lambda x: F.kl_penalty(x, ref_logp, kind=kind).sum(), logp)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(g, ref_g, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------------------- logits
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_and_entropy_match_verl(dtype):
    gen = torch.Generator().manual_seed(9)
    logits = (torch.randn(3, 7, 50, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=gen)
    ref_lp = VERL.vf.logprobs_from_logits_naive(logits.float(), labels)
    ref_ent = VERL.vf.entropy_from_logits(logits.float())
    lp, ent = F.logprobs_and_entropy(logits, labels, chunk_size=4)
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=1e-5)


def test_entropy_matches_verl_chunked_and_grad():
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(20, 33, generator=gen, dtype=torch.float64)
    w = torch.randn(20, dtype=torch.float64, generator=gen)
    _, ref_g = _loss_and_grad(lambda x: (VERL.vf.entropy_from_logits(x) * w).sum(), logits)
    _, g = _loss_and_grad(lambda x: (F.entropy_from_logits(x, chunk_size=6).double() * w).sum(), logits)
    torch.testing.assert_close(g, ref_g, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        F.entropy_from_logits(logits.float(), chunk_size=7),
        VERL.vf.entropy_from_logits_with_chunking(logits.float(), 5),
    )


# ---------------------------------------------------------------------------------------------- Clip-Cov / KL
def test_kl_cov_matches_verl():
    gen = torch.Generator().manual_seed(11)
    b, t = 40, 30
    mask = torch.rand(b, t, generator=gen) < 0.8
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.randn(b, t, generator=gen, dtype=torch.float64)
    cfg = _actor(policy_loss=VERL.ActorConfig(kl_cov_ratio=0.01, ppo_kl_coef=1.0))
    mf = mask.to(logp.dtype)
    ref_loss, ref_g = _loss_and_grad(
        lambda lp: VERL.core.compute_policy_loss_kl_cov(old, lp, adv, mf, "token-mean", cfg)[0], logp
    )

    def ours(lp):
        tok = F.unclipped_surrogate(lp, old, adv, mask)[0] + F.kl_cov_penalty(
            lp, old, adv, mask, k_ratio=0.01
        )
        return F.aggregate(tok, mask)

    loss, g = _loss_and_grad(ours, logp)
    torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(g, ref_g, atol=1e-10, rtol=1e-9)


def test_clip_cov_candidates_match_verl():
    """verl draws with the global RNG: compare the candidate set and the number dropped, not the draw."""
    gen = torch.Generator().manual_seed(12)
    b, t = 50, 40
    mask = torch.rand(b, t, generator=gen) < 0.9
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 4
    logp = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.1
    adv = torch.randn(b, t, generator=gen, dtype=torch.float64) * 2
    cfg = _actor(policy_loss=VERL.ActorConfig(clip_cov_ratio=0.01, clip_cov_lb=1.0, clip_cov_ub=5.0))
    mf = mask.to(logp.dtype)
    torch.manual_seed(0)
    _, metrics = VERL.core.compute_policy_loss_clip_cov(old, logp, adv, mf, "token-mean", cfg)
    _, st = F.clipped_surrogate(logp, old, adv, mask)
    clipped = (-adv * torch.clamp(torch.exp(logp - old), 0.8, 1.2)) > (-adv * torch.exp(logp - old))
    w = F.clip_cov_weights(
        logp, adv, mask, clip_ratio=0.01, exclude=clipped, generator=torch.Generator().manual_seed(1)
    )
    assert F.masked_mean((w == 0).double(), mask).item() == pytest.approx(
        metrics["actor/pg_clipfrac"], abs=1e-9
    )
    cov = F.covariance_score(logp, adv, mask)
    dropped = mask & (w == 0)
    assert bool(((cov[dropped] > 1) & (cov[dropped] < 5) & ~clipped[dropped]).all())
