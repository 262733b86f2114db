"""The zero-variance policy of the DataModule: chosen by name or by the import path of a subclass."""

from __future__ import annotations

import pytest
import torch

from rlvr_lightning.data.dynamic_sampling import (
    KeepGroups,
    ResampleGroups,
    SkipBatch,
    ZeroVariancePolicy,
    signal_groups,
    zero_variance_policy,
)
from rlvr_lightning.data.types import RolloutBatch


class FirstDrawPolicy(ZeroVariancePolicy):
    """Always takes the next step's rollouts instead."""

    def __call__(self, batch, draw, global_count, *, need, max_extra):
        return draw()


def test_names_and_import_paths_choose_a_policy():
    assert isinstance(zero_variance_policy("keep"), KeepGroups)
    assert isinstance(zero_variance_policy("skip_batch"), SkipBatch)
    assert isinstance(zero_variance_policy("resample"), ResampleGroups)
    assert isinstance(zero_variance_policy("test_dynamic_sampling.FirstDrawPolicy"), FirstDrawPolicy)
    policy = FirstDrawPolicy()
    assert zero_variance_policy(policy) is policy
    for bad in ("drop", "torch.nn.Linear", "no.such.Policy"):
        with pytest.raises(ValueError, match="zero_variance_groups must be 'keep', 'skip_batch' or 'resample'"):
            zero_variance_policy(bad)


def _batch(scores, group_ids):
    b = len(scores)
    return RolloutBatch(
        prompt_ids=torch.zeros(b, 1, dtype=torch.long), prompt_mask=torch.ones(b, 1, dtype=torch.bool),
        response_ids=torch.zeros(b, 1, dtype=torch.long), response_mask=torch.ones(b, 1, dtype=torch.bool),
        group_ids=torch.tensor(group_ids), scores=torch.tensor(scores),
        truncated=torch.zeros(b, dtype=torch.bool),
    )


def test_signal_groups_are_those_with_unequal_scores():
    batch = _batch([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 2.0], [4, 4, 2, 2, 9, 9, 7])
    assert signal_groups(batch) == [2]
    assert KeepGroups()(batch, None, None, need=4, max_extra=0) is batch
