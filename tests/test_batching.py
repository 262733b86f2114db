"""Micro-batches by token budget: a partition of the mini-batch, sorted by length, within the budget; equal counts
over ranks; and the gradient of one big batch (float64, to 1e-6 relative) through ``accumulate_gradients``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "components"))
from _loss_inputs import make_batch, tiny_policy  # noqa: E402

from rlvr_lightning.batching import check_update_settings, micro_batches, padded_tokens, split_to  # noqa: E402
from rlvr_lightning.components import KL, ConstantEntropyBonus, Loss, SeqMeanTokenMean  # noqa: E402
from rlvr_lightning.scoring import Scoring  # noqa: E402
from rlvr_lightning.update import OldScores, accumulate_gradients  # noqa: E402


def _lengths(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 30, (n,), generator=g), torch.randint(1, 80, (n,), generator=g)


@pytest.mark.parametrize("budget,size", [(64, None), (200, None), (400, 3), (10_000, None)])
def test_token_micro_batches_partition_sort_and_respect_the_budget(budget, size):
    p, r = _lengths(40)
    index = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:25]
    groups = micro_batches(index, size, tokens=budget, prompt_lengths=p, response_lengths=r)
    assert sorted(torch.cat(groups).tolist()) == sorted(index.tolist())  # each sequence exactly once
    totals = [(p[g] + r[g]).tolist() for g in groups]
    flat = [t for ts in totals for t in ts]
    assert flat == sorted(flat, reverse=True)  # longest first, micro-batch after micro-batch
    for g in groups:
        assert len(g) == 1 or len(g) * int(p[g].max() + r[g].max()) <= budget
        assert size is None or len(g) <= size
    if budget == 10_000:
        assert len(groups) == 1


def test_sorting_computes_less_padding_than_chunks_in_order():
    p, r = _lengths(64, seed=2)
    index = torch.arange(64)
    chunks = micro_batches(index, 8)
    packed = micro_batches(index, None, tokens=8 * int((p + r).max()), prompt_lengths=p, response_lengths=r)
    real = int((p + r).sum())
    assert padded_tokens(packed, p, r) < padded_tokens(chunks, p, r)
    assert padded_tokens(chunks, p, r) >= real and padded_tokens(packed, p, r) >= real


def test_split_to_gives_every_rank_the_same_number_of_forwards():
    groups = [torch.arange(5), torch.arange(5, 7), torch.tensor([7])]
    out = split_to(groups, 5)
    assert len(out) == 5 and sorted(torch.cat(out).tolist()) == list(range(8))
    assert split_to(groups, 2) == groups  # never merges
    with pytest.raises(ValueError, match="cannot cut 8 sequences into 9"):
        split_to(groups, 9)


def test_micro_batch_tokens_is_validated():
    with pytest.raises(ValueError, match="model.micro_batch_tokens must be >= 1"):
        check_update_settings(1, 1, None, 1.0, 2.0, 3, 0, 0)


def _gradient(scoring: Scoring, loss_fn: Loss, fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The flat policy gradient and the summed statistics of one mini-batch (the whole batch), in float64."""
    torch.manual_seed(0)
    policy = tiny_policy().double()
    batch = make_batch(policy.config.vocab_size)
    mask = batch.response_mask
    g = torch.Generator().manual_seed(3)
    advantages = loss_fn.advantages(batch.scores.double(), batch.group_ids, mask)
    if fused:
        old = OldScores.from_forward(mask)
    else:
        logp, ent = scoring.score(policy, batch)
        old = OldScores(logp + 0.3 * torch.randn(logp.shape, generator=g, dtype=torch.float64), ent)
    ref = old.logp + 0.2 * torch.randn(old.logp.shape, generator=g, dtype=torch.float64)
    sums = accumulate_gradients(
        policy, loss_fn, scoring, batch, torch.arange(len(batch)), old, advantages, ref_logp=ref, tis_cap=None,
        norms=loss_fn.normalizers(mask), context={}, backward=lambda loss: loss.backward())
    return torch.cat([p.grad.reshape(-1) for p in policy.parameters()]), sums


@pytest.mark.parametrize("fused", [False, True], ids=["old-scored", "old-from-update"])
def test_token_budget_micro_batches_give_the_gradient_of_one_big_batch(fused):
    loss_fn = Loss(aggregation=SeqMeanTokenMean(), kl=KL(kind="k3", coef=0.5),
                   entropy_bonus=ConstantEntropyBonus(alpha=0.1))
    big, big_sums = _gradient(Scoring(), loss_fn, fused)
    assert len(Scoring(micro_batch_tokens=20).micro_batches(make_batch(99), torch.arange(6))) >= 3
    small, small_sums = _gradient(Scoring(micro_batch_tokens=20), loss_fn, fused)
    assert float(big.norm()) > 0
    assert float((small - big).norm() / big.norm()) < 1e-6
    for key in big_sums:
        assert abs(float(small_sums[key] - big_sums[key])) <= 1e-6 * max(1.0, abs(float(big_sums[key]))), key
