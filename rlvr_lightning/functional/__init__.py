"""Pure-torch RL math: advantages, surrogates, aggregation, KL, log-probs/entropy, reweighting, metrics math.

Every function takes tensors first and keyword-only hyper-parameters, imports only torch and returns tensors
(or ``(tensor, dict[str, tensor])`` with detached statistics). See ``docs/functional.md`` for the equations.
"""

from rlvr_lightning.functional._masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlvr_lightning.functional.advantages import (
    grpo_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
    signed_reward_advantages,
)
from rlvr_lightning.functional.aggregation import AGG_MODES, aggregate
from rlvr_lightning.functional.groups import GroupStats, group_stats
from rlvr_lightning.functional.kl import KL_KINDS, kl_penalty
from rlvr_lightning.functional.linear_logits import check_logprobs_and_entropy, linear_logprobs_and_entropy
from rlvr_lightning.functional.logits import entropy_from_logits, logprobs_and_entropy, logprobs_from_logits
from rlvr_lightning.functional.reweighting import (
    clip_cov_select,
    clip_cov_weights,
    covariance_score,
    kl_cov_penalty,
    kl_cov_select,
    par_weights,
    random_drop_positive,
    sign_mask,
    top_entropy_mask,
)
from rlvr_lightning.functional.surrogates import (
    cispo_surrogate,
    clipped_surrogate,
    gspo_surrogate,
    unclipped_surrogate,
)

from rlvr_lightning.functional.accuracy import avg_at_k, group_counts, maj_at_k, pass_at_k
from rlvr_lightning.functional.bootstrap import bootstrap_mean_interval
from rlvr_lightning.functional.calibration import (
    CONFIDENCE_KINDS,
    brier_score,
    calibration_bins,
    confidence_auroc,
    expected_calibration_error,
    sequence_confidence,
)
from rlvr_lightning.functional.diversity import distinct_n, distinct_n_tokens, self_bleu
from rlvr_lightning.functional.entropy_stats import covariance_stats, token_entropy_stats

__all__ = [
    "AGG_MODES",
    "GroupStats",
    "KL_KINDS",
    "aggregate",
    "check_logprobs_and_entropy",
    "cispo_surrogate",
    "clip_cov_select",
    "clip_cov_weights",
    "clipped_surrogate",
    "covariance_score",
    "entropy_from_logits",
    "group_stats",
    "grpo_advantages",
    "gspo_surrogate",
    "kl_cov_penalty",
    "kl_cov_select",
    "kl_penalty",
    "linear_logprobs_and_entropy",
    "logprobs_and_entropy",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "par_weights",
    "random_drop_positive",
    "reinforce_pp_baseline_advantages",
    "rloo_advantages",
    "sign_mask",
    "signed_reward_advantages",
    "top_entropy_mask",
    "unclipped_surrogate",
]

__all__ += [
    "CONFIDENCE_KINDS",
    "avg_at_k",
    "bootstrap_mean_interval",
    "brier_score",
    "calibration_bins",
    "confidence_auroc",
    "covariance_stats",
    "distinct_n",
    "distinct_n_tokens",
    "expected_calibration_error",
    "group_counts",
    "maj_at_k",
    "pass_at_k",
    "self_bleu",
    "sequence_confidence",
    "token_entropy_stats",
]
