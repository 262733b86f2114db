"""Two CPU processes (gloo) each add half of the data; the synced compute equals the one-process value."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr_lightning.metrics import CalibrationError, ConfidenceAUROC, EntropyDynamics, PassAtK, TokenEntropy

WORLD = 2


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, t = 8, 10
    mask = torch.arange(t).expand(b, t) < torch.randint(1, t + 1, (b, 1), generator=g)
    conf = torch.rand(64, generator=g)
    n = torch.randint(4, 10, (12,), generator=g)
    return {
        "entropy": torch.rand(b, t, generator=g) * 3,
        "logp": -torch.rand(b, t, generator=g) * 4,
        "adv": torch.randn(b, 1, generator=g).expand(b, t).contiguous() + 0.2,
        "mask": mask,
        "conf": conf,
        "correct": (torch.rand(64, generator=g) < conf).long(),
        "n": n,
        "c": (torch.rand(12, generator=g) * (n + 1)).floor().long().clamp(max=n),
    }


def _run(rank: int | None) -> dict[str, torch.Tensor]:
    """Update every metric with this rank's half (all data when ``rank`` is None) and compute."""
    d = _data()
    if rank is not None:
        d = {k: v.chunk(WORLD)[rank] for k, v in d.items()}
    ent, cov, ece, auroc, pk = (
        TokenEntropy(),
        EntropyDynamics(),
        CalibrationError(),
        ConfidenceAUROC(),
        PassAtK(ks=(1, 4)),
    )
    ent.update(d["entropy"], d["mask"], d["adv"])
    cov.update(d["logp"], d["adv"], d["mask"])
    ece.update(d["conf"], d["correct"])
    auroc.update(d["conf"], d["correct"])
    pk.update(d["n"], d["c"])
    out = {f"entropy/{k}": v for k, v in ent.compute().items()}
    out.update({f"cov/{k}": v for k, v in cov.compute().items()})
    out.update({f"pass/{k}": v for k, v in pk.compute().items()})
    out["ece"] = ece.compute()
    out["auroc"] = auroc.compute()
    return out


def _worker(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.save(_run(rank), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_sync_over_two_gloo_processes(tmp_path):
    path = str(tmp_path / "out")
    mp.spawn(_worker, args=(_free_port(), path), nprocs=WORLD, join=True)
    single = _run(None)
    for rank in range(WORLD):
        got = torch.load(f"{path}.{rank}")
        assert set(got) == set(single)
        for key, v in single.items():
            torch.testing.assert_close(got[key], v, rtol=1e-12, atol=1e-12, msg=key)
    # the halves differ from the whole, so the sync did real work
    half = _run(0)
    assert any(not torch.allclose(half[k], single[k]) for k in single)
