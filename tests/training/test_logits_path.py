"""Fits on the smoke config: the hidden-state path trains exactly as full logits do, with every entropy feature and
the guard on; a single update per rollout batch takes the old log-probs from its own forward (one forward fewer,
same losses and weights)."""

from __future__ import annotations

import pytest
import torch
from toy_training import fit, state

import rlvr_lightning.scoring as scoring
from rlvr_lightning.fused_head import hidden_path_unsupported

KEYS = ("train/loss", "train/entropy", "train/entropy_pos", "train/entropy_neg", "train/grad_norm",
        "train/clip_frac", "train/approx_kl")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _close_logs(a: dict, b: dict, keys: tuple[str, ...], tol: float) -> None:
    for key in keys:
        x, y = float(a[key]), float(b[key])
        assert abs(x - y) <= tol * max(1.0, abs(x)), (key, x, y)


def test_smoke_fit_gives_the_same_weights_on_either_logits_path(tmp_path):
    hidden = fit(tmp_path, "--model.logits_path", "hidden", "--model.check_logprobs", "true", name="hidden")
    full = fit(tmp_path, "--model.logits_path", "full", "--model.check_logprobs", "true", name="full")
    assert hidden_path_unsupported(hidden.model.policy) is None  # no fall-back: the hidden path ran
    assert _max_diff(state(hidden.model.policy), state(full.model.policy)) < 1e-5
    _close_logs(hidden.trainer.callback_metrics, full.trainer.callback_metrics, KEYS + ("train/lambda",), 1e-5)


ENTROPY_FEATURES = {
    "entropy_bonus": ("--model.entropy_bonus", "ConstantEntropyBonus", "--model.entropy_bonus.alpha", "0.01"),
    "adaptive_entropy": ("--model.entropy_bonus", "AdaptiveEntropyBonus", "--model.entropy_bonus.target", "5.0",
                         "--model.entropy_bonus.alpha0", "0.001"),
    "high_entropy_tokens": ("--model.reweight", "HighEntropyTokens", "--model.reweight.rho", "0.2"),
    "clip_cov": ("--model.reweight", "ClipCov", "--model.reweight.clip_ratio", "0.2",
                 "--model.reweight.lower", "-5.0", "--model.reweight.upper", "5.0"),
    "kl_cov": ("--model.reweight", "KLCov", "--model.reweight.k_ratio", "0.2"),
    "par": ("--model.reweight", "PAR", "--model.reweight.lam", "0.3"),
}


@pytest.mark.parametrize("feature", sorted(ENTROPY_FEATURES))
def test_entropy_features_train_on_the_hidden_path_as_on_full_logits(tmp_path, feature):
    common = (*ENTROPY_FEATURES[feature], "--trainer.max_steps", "2", "--model.check_logprobs", "true",
              "--model.micro_batch_size", "8")
    hidden = fit(tmp_path, *common, "--model.logits_path", "hidden", name="hidden")
    full = fit(tmp_path, *common, "--model.logits_path", "full", name="full")
    assert hidden_path_unsupported(hidden.model.policy) is None
    assert _max_diff(state(hidden.model.policy), state(full.model.policy)) < 1e-5
    logs_h, logs_f = hidden.trainer.callback_metrics, full.trainer.callback_metrics
    extra = tuple(k for k in ("train/entropy_coef", "train/lambda") if k in logs_h)
    _close_logs(logs_h, logs_f, KEYS + extra, 1e-5)
    assert 0 < float(logs_h["train/entropy"]) < torch.log(torch.tensor(99.0))  # the entropy split is logged
    if feature == "adaptive_entropy":  # entropy below the target of 5 nats: the coefficient rises every step
        assert float(logs_h["train/entropy_coef"]) == pytest.approx(0.0015)  # what step 2 used
        assert hidden.model.entropy_bonus.alpha == pytest.approx(0.002)


def _count_forwards(monkeypatch) -> list[int]:
    """Count the scoring forwards (each goes through ``head_logprobs`` on the hidden path)."""
    calls = [0]
    real = scoring.head_logprobs

    def counted(*args, **kw):
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(scoring, "head_logprobs", counted)
    return calls


@pytest.mark.parametrize("updates,saved", [
    ((), 3),
    (("--model.ppo_epochs", "2", "--trainer.max_steps", "6"), 0),
    (("--model.reweight", "ClipCov", "--model.reweight.clip_ratio", "0.2"), 0),
], ids=["one-update", "two-updates", "clip-cov"])
def test_a_single_update_takes_the_old_logprobs_from_its_own_forward(tmp_path, monkeypatch, updates, saved):
    """One update per rollout batch: one forward fewer per step (3 steps), the same losses and weights as scoring
    the old policy separately. Two updates per batch, or a token selection (Clip-Cov ranks tokens by their old
    log-probs before the update's forward): the old policy is scored separately either way."""
    calls = _count_forwards(monkeypatch)
    fused = fit(tmp_path, *updates, "--model.fuse_old_logprobs", "true", name="fused")
    fused_calls, calls[0] = calls[0], 0
    separate = fit(tmp_path, *updates, "--model.fuse_old_logprobs", "false", name="separate")
    assert calls[0] - fused_calls == saved
    assert _max_diff(state(fused.model.policy), state(separate.model.policy)) < 1e-6
    _close_logs(fused.trainer.callback_metrics, separate.trainer.callback_metrics, KEYS, 1e-6)


def test_a_fit_sharing_each_prompt_prefix_trains_as_one_that_does_not(tmp_path, monkeypatch):
    """The smoke run (4 prompts x 4 responses): each prompt's prefix computed once per forward trains to the same
    weights and logs as every row computing its own."""
    made = []
    real = scoring.prefix_cache
    monkeypatch.setattr(scoring, "prefix_cache", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    shared = fit(tmp_path, "--model.share_prompt_prefix", "true", name="shared")
    assert made and all(cache is not None for cache in made)  # every forward shared its prompts' prefixes
    plain = fit(tmp_path, "--model.share_prompt_prefix", "false", name="plain")
    # 3 AdamW steps at lr 1e-3: Adam scales each coordinate's step by its own gradient size, so rounding-level
    # differences in small gradients (prompt-only embedding rows: summed over a prefix's rows) reach ~1e-5
    assert _max_diff(state(shared.model.policy), state(plain.model.policy)) < 3e-5
    _close_logs(shared.trainer.callback_metrics, plain.trainer.callback_metrics, KEYS + ("train/lambda",), 1e-5)
