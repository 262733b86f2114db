"""Mini-batch-wide Clip-Cov / KL-Cov selection (rlvr_lightning.token_selection) against naive float64 selections:
the same tokens whatever the order of the sequences, and from two gloo processes holding half of them each."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr_lightning.components import ClipCov, KLCov, ReweightContext
from rlvr_lightning.token_selection import select_tokens

B, T, WORLD, STEP = 12, 9, 2, 3


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B, 1), generator=g)  # ragged: the ranks hold different token counts
    return {
        "logp": -torch.rand(B, T, generator=g) * 3,
        "adv": torch.randn(B, 1, generator=g).expand(B, T).contiguous(),
        "mask": torch.arange(T).expand(B, T) < lengths,
        "old": -torch.rand(B, T, generator=g) * 3,
    }


def _reweights():
    return {"kl_cov": KLCov(k_ratio=0.15), "clip_cov": ClipCov(clip_ratio=0.1, lower=-0.2, upper=2.0, seed=4)}


def _naive_cov(d) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Valid tokens in (sequence, position) order and their covariance score, in float64."""
    toks = [(i, t) for i in range(B) for t in range(T) if d["mask"][i, t]]
    lp = np.array([float(d["logp"][i, t]) for i, t in toks])
    a = np.array([float(d["adv"][i, t]) for i, t in toks])
    return toks, (a - a.mean()) * (lp - lp.mean())


def _naive(name: str, d) -> set[tuple[int, int]]:
    """KL-Cov: the floor(k N) largest scores (ties: earlier token). Clip-Cov: of the tokens in the band, the
    floor(r N) with the largest of N uniform keys drawn in token order from the generator seeded by (seed, step)."""
    toks, cov = _naive_cov(d)
    n = len(toks)
    if name == "kl_cov":
        order = sorted(range(n), key=lambda j: (-cov[j], j))
        return {toks[j] for j in order[: max(1, math.floor(0.15 * n))]}
    g = torch.Generator()
    g.manual_seed(((4 * 1_000_003 + STEP) * 1_000_033 + 0) % (2**63 - 1))
    keys = torch.rand(1, n, generator=g)[0].tolist()
    band = [j for j in range(n) if -0.2 < cov[j] < 2.0]
    return {toks[j] for j in sorted(band, key=lambda j: -keys[j])[: max(1, math.floor(0.1 * n))]}


def _select(name: str, d, rows: torch.Tensor, **kw) -> torch.Tensor:
    """The selection of the sequences ``rows`` (their batch indices are their ids), shape ``(len(rows), T)``."""
    return select_tokens(_reweights()[name], d["logp"][rows], d["adv"][rows], d["mask"][rows], d["old"][rows], rows,
                         context={"step": STEP}, **kw)


def _as_set(sel: torch.Tensor, rows: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(rows[i]), int(t)) for i, t in sel.nonzero().tolist()}


@pytest.mark.parametrize("name", ["kl_cov", "clip_cov"])
def test_selection_equals_the_naive_one_in_any_sequence_order(name):
    d = _batch()
    expected = _naive(name, d)
    assert len(expected) >= 3
    rows = torch.arange(B)
    assert _as_set(_select(name, d, rows), rows) == expected
    shuffled = torch.randperm(B, generator=torch.Generator().manual_seed(1))
    assert _as_set(_select(name, d, shuffled), shuffled) == expected
    # selecting inside each of 4 micro-batches (what the loss does without a pre-computed selection) is not the same
    local = set()
    for part in rows.chunk(4):
        ctx = ReweightContext(advantages=d["adv"][part], logp=d["logp"][part], old_logp=d["old"][part],
                              entropy=-d["logp"][part], mask=d["mask"][part], step=STEP)
        local |= _as_set(_reweights()[name].select(ctx), part)
    assert local != expected


def _gather(x: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return torch.stack(out)


def _worker(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        d = _batch()
        # rank r holds sequences [r B/W, (r+1) B/W), in a shuffled order
        order = torch.randperm(B // WORLD, generator=torch.Generator().manual_seed(rank))
        rows = torch.arange(B).chunk(WORLD)[rank][order]
        out = {name: (_select(name, d, rows, all_gather=_gather, rank=rank), rows) for name in _reweights()}
        torch.save(out, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_select_the_tokens_of_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "sel")
    mp.spawn(_worker, args=(port, path), nprocs=WORLD, join=True)
    parts = [torch.load(f"{path}.{r}") for r in range(WORLD)]
    d = _batch()
    for name in _reweights():
        union = set().union(*(_as_set(*p[name]) for p in parts))
        assert union == _naive(name, d) == _as_set(_select(name, d, torch.arange(B)), torch.arange(B))
