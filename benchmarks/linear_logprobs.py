"""Benchmark: log-probs/entropy from hidden states (``linear_logprobs_and_entropy``) against the full-logits path.

Forward + backward at N=4096 tokens, H=512, V=65536, float32, for both paths in the same run:

* ``hidden``: ``linear_logprobs_and_entropy(hidden, weight, labels)``, logits never materialized;
* ``full``:   ``logits = hidden @ weight.T`` (1 GiB) then the chunked ``logprobs_and_entropy(logits, labels)``.

The loss is ``sum(logp * u) + sum(entropy * w)`` with random upstream gradients ``u, w``; both paths return
``grad hidden`` and ``grad weight``. Printed: peak memory above the inputs, and the same less the two gradients
every path must return (the "extra" the targets refer to), as a fraction of the float32 logits the hidden path
avoids (N*V*4 bytes); the best time of each path (runs alternate between the paths); and the hidden path's
largest relative error (``max|x - ref| / max|ref|``) of log-probs, entropies and both gradients against a
float64 reference (full float64 logits per block of rows, ``log_softmax``, plain autograd). PASS/FAIL against
the targets: extra memory <= 0.15x the logits, time <= 1.5x the full-logits path, errors <= 1e-5.

On CPU each measurement runs in a fresh child process that reads its peak resident memory (``VmHWM``, reset
through ``/proc/self/clear_refs``) around the step, so the figure includes every temporary. On CUDA the peak
comes from ``torch.cuda.max_memory_allocated``.

Usage: ``python benchmarks/linear_logprobs.py [--n 4096] [--h 512] [--v 65536] [--chunk-size 128]
[--repeats 2] [--device cpu|cuda] [--skip-accuracy]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _peak_memory import peak_bytes_since, reset_peak

from rlvr_lightning.functional import linear_logprobs_and_entropy, logprobs_and_entropy
from rlvr_lightning.functional.linear_logits import DEFAULT_LINEAR_CHUNK_SIZE

MEM_TARGET = 0.15
TIME_TARGET = 1.5
ERR_TARGET = 1e-5


def _inputs(n: int, h: int, v: int, device: str = "cpu"):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen) / h**0.5 * 2  # logits of std 2: peaked and flat rows
    labels = torch.randint(0, v, (n,), generator=gen)
    up_lp, up_ent = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    return [t.to(device) for t in (hidden, weight, labels, up_lp, up_ent)]


def _step(method: str, hidden, weight, labels, up_lp, up_ent, chunk_size: int):
    """Forward + backward of one path; returns ``(logp, entropy, grad_hidden, grad_weight)``."""
    h = hidden.detach().requires_grad_(True)
    w = weight.detach().requires_grad_(True)
    if method == "hidden":
        logp, ent = linear_logprobs_and_entropy(h, w, labels, chunk_size=chunk_size)
    else:
        logp, ent = logprobs_and_entropy(h @ w.T, labels)
    g_h, g_w = torch.autograd.grad((logp * up_lp).sum() + (ent * up_ent).sum(), (h, w))
    return logp.detach(), ent.detach(), g_h, g_w



def _child_run(method: str, n: int, h: int, v: int, chunk_size: int, measure_memory: bool) -> None:
    """In a fresh process: print JSON with the peak bytes above the inputs and the time of one step."""
    hidden, weight, labels, up_lp, up_ent = _inputs(n, h, v)
    _step(method, hidden[:64], weight, labels[:64], up_lp[:64], up_ent[:64], chunk_size)  # warm-up
    res = {}
    if measure_memory:
        base = reset_peak()
        out = _step(method, hidden, weight, labels, up_lp, up_ent, chunk_size)
        res["peak_bytes"] = peak_bytes_since(base)
        res["grad_bytes"] = sum(t.numel() * t.element_size() for t in out[2:])
        del out
    t0 = time.perf_counter()
    _step(method, hidden, weight, labels, up_lp, up_ent, chunk_size)
    res["time_s"] = time.perf_counter() - t0
    print(json.dumps(res))


def _reference(hidden, weight, labels, up_lp, up_ent, rows: int = 256):
    """float64 log-probs, entropies and gradients: full logits per block of rows, ``log_softmax``, autograd."""
    w = weight.double().requires_grad_(True)
    logp, ent, g_h = [], [], []
    for s in range(0, hidden.shape[0], rows):
        h = hidden[s : s + rows].double().requires_grad_(True)
        logsm = torch.log_softmax(h @ w.T, dim=-1)
        lp = logsm.gather(-1, labels[s : s + rows].unsqueeze(-1)).squeeze(-1)
        en = -(logsm.exp() * logsm).sum(-1)
        loss = (lp * up_lp[s : s + rows].double()).sum() + (en * up_ent[s : s + rows].double()).sum()
        loss.backward()  # accumulates into w.grad
        logp.append(lp.detach())
        ent.append(en.detach())
        g_h.append(h.grad)
    return torch.cat(logp), torch.cat(ent), torch.cat(g_h), w.grad


def _child_accuracy(n: int, h: int, v: int, chunk_size: int) -> None:
    inputs = _inputs(n, h, v)
    ours = _step("hidden", *inputs, chunk_size)
    ref = _reference(*inputs)
    names = ("logp", "entropy", "grad_hidden", "grad_weight")
    err = {k: float((a.double() - r).abs().max() / r.abs().max()) for k, a, r in zip(names, ours, ref)}
    print(json.dumps(err))


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _measure_cpu(a) -> tuple[dict, dict]:
    size = ["--n", str(a.n), "--h", str(a.h), "--v", str(a.v), "--chunk-size", str(a.chunk_size)]
    res = {m: {"times": []} for m in ("hidden", "full")}
    for i in range(a.repeats):
        for m in res:  # alternate the paths so load on the machine hits both alike
            r = _run_child(["--child", m, *size] + (["--memory"] if i == 0 else []))
            res[m]["times"].append(r.pop("time_s"))
            res[m].update(r)
    err = {} if a.skip_accuracy else _run_child(["--child", "accuracy", *size])
    return res, err


def _measure_cuda(a) -> tuple[dict, dict]:
    inputs = _inputs(a.n, a.h, a.v, device="cuda")
    res = {m: {"times": []} for m in ("hidden", "full")}
    for m in res:
        _step(m, *inputs, a.chunk_size)  # warm-up
    for i in range(a.repeats):
        for m in res:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            out = _step(m, *inputs, a.chunk_size)
            torch.cuda.synchronize()
            res[m]["times"].append(time.perf_counter() - t0)
            res[m]["peak_bytes"] = torch.cuda.max_memory_allocated() - base
            res[m]["grad_bytes"] = sum(t.numel() * t.element_size() for t in out[2:])
            del out
    err = {}
    if not a.skip_accuracy:
        ours = _step("hidden", *inputs, a.chunk_size)
        ref = _reference(*inputs)
        names = ("logp", "entropy", "grad_hidden", "grad_weight")
        err = {k: float((x.double() - r).abs().max() / r.abs().max()) for k, x, r in zip(names, ours, ref)}
    return res, err


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--h", type=int, default=512)
    p.add_argument("--v", type=int, default=65536)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_LINEAR_CHUNK_SIZE)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--skip-accuracy", action="store_true", help="skip the float64 reference (slow on CPU)")
    p.add_argument("--child", choices=["hidden", "full", "accuracy"], help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child == "accuracy":
        _child_accuracy(a.n, a.h, a.v, a.chunk_size)
        return
    if a.child:
        _child_run(a.child, a.n, a.h, a.v, a.chunk_size, a.memory)
        return
    res, err = (_measure_cuda if a.device == "cuda" else _measure_cpu)(a)
    logits_bytes = a.n * a.v * 4
    mib = 2**20
    print(
        f"device={a.device} N={a.n} H={a.h} V={a.v} float32 forward+backward chunk_size={a.chunk_size} "
        f"logits avoided={logits_bytes / mib:.0f} MiB torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    for m, r in res.items():
        extra = r["peak_bytes"] - r["grad_bytes"]
        times = ", ".join(f"{t:.2f}" for t in r["times"])
        print(
            f"  {m:6s} peak {r['peak_bytes'] / mib:7.1f} MiB, less the gradients {extra / mib:7.1f} MiB "
            f"({extra / logits_bytes:6.1%} of logits)   time {min(r['times']):6.2f} s (runs: {times})"
        )
    mem_ratio = (res["hidden"]["peak_bytes"] - res["hidden"]["grad_bytes"]) / logits_bytes
    time_ratio = min(res["hidden"]["times"]) / min(res["full"]["times"])
    verdict = {True: "PASS", False: "FAIL"}
    ok = [mem_ratio <= MEM_TARGET, time_ratio <= TIME_TARGET]
    print(f"memory: hidden extra / logits = {mem_ratio:.3f} (target <= {MEM_TARGET}) {verdict[ok[0]]}")
    print(f"time:   hidden / full         = {time_ratio:.3f} (target <= {TIME_TARGET}) {verdict[ok[1]]}")
    if err:
        worst = max(err.values())
        ok.append(worst <= ERR_TARGET)
        detail = ", ".join(f"{k} {e:.1e}" for k, e in err.items())
        print(f"error:  vs float64, max|x-ref|/max|ref|: {detail} (target <= {ERR_TARGET:.0e}) {verdict[ok[-1]]}")
    else:
        print("error:  skipped (--skip-accuracy)")
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
