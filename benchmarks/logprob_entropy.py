"""Benchmark: chunked ``logprobs_and_entropy`` against the naive ``log_softmax`` path (forward, no grad).

Measures, at N=8192 tokens and V=32768 (float32 logits, 1 GiB), the forward's peak extra memory above the
logits and its time, for both paths in the same run, and prints PASS/FAIL against the targets: peak extra
memory at most 25% of the logits' size and time at most 1.5x the naive path.

On CUDA the peak comes from ``torch.cuda.max_memory_allocated``. On CPU each measurement runs in a fresh child
process that reads its peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``) before and
after the forward, so the figure includes every temporary the forward allocates.

Usage: ``python benchmarks/logprob_entropy.py [--n 8192] [--v 32768] [--repeats 3] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _peak_memory import peak_bytes_since, reset_peak

from rlvr_lightning.functional import logprobs_and_entropy

MEM_TARGET = 0.25
TIME_TARGET = 1.5


def naive(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logsm = torch.log_softmax(logits.float(), dim=-1)
    return logsm.gather(-1, labels.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


def chunked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logprobs_and_entropy(logits, labels)


METHODS = {"naive": naive, "chunked": chunked}



def _child(method: str, n: int, v: int, repeats: int) -> None:
    """Run in a fresh process: print JSON with the peak extra bytes and the best time of ``method``."""
    torch.manual_seed(0)
    logits = torch.randn(n, v)
    labels = torch.randint(0, v, (n,))
    fn = METHODS[method]
    with torch.no_grad():
        fn(logits[:64], labels[:64])  # warm-up on a slice (allocator, kernels)
        base = reset_peak()
        out = fn(logits, labels)
        peak_bytes = peak_bytes_since(base)
        del out
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(logits, labels)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"extra_bytes": peak_bytes, "time_s": min(times)}))


def _measure_cpu(method: str, n: int, v: int, repeats: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--n",
        str(n),
        "--v",
        str(v),
        "--repeats",
        str(repeats),
    ]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _measure_cuda(method: str, n: int, v: int, repeats: int) -> dict:
    torch.manual_seed(0)
    logits = torch.randn(n, v, device="cuda")
    labels = torch.randint(0, v, (n,), device="cuda")
    fn = METHODS[method]
    with torch.no_grad():
        fn(logits, labels)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn(logits, labels)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        del out
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(logits, labels)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"extra_bytes": extra, "time_s": min(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--v", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.n, args.v, args.repeats)
        return
    measure = _measure_cuda if args.device == "cuda" else _measure_cpu
    logits_bytes = args.n * args.v * 4
    res = {m: measure(m, args.n, args.v, args.repeats) for m in METHODS}
    print(
        f"device={args.device} N={args.n} V={args.v} float32 logits={logits_bytes / 2**20:.0f} MiB "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    for m, r in res.items():
        print(
            f"  {m:8s} peak extra {r['extra_bytes'] / 2**20:8.1f} MiB "
            f"({r['extra_bytes'] / logits_bytes:6.1%} of logits)   time {r['time_s'] * 1e3:8.1f} ms"
        )
    mem_ratio = res["chunked"]["extra_bytes"] / logits_bytes
    time_ratio = res["chunked"]["time_s"] / res["naive"]["time_s"]
    ok_mem, ok_time = mem_ratio <= MEM_TARGET, time_ratio <= TIME_TARGET
    verdict = {True: "PASS", False: "FAIL"}
    print(f"memory: chunked extra / logits = {mem_ratio:.3f} (target <= {MEM_TARGET}) {verdict[ok_mem]}")
    print(f"time:   chunked / naive        = {time_ratio:.3f} (target <= {TIME_TARGET}) {verdict[ok_time]}")
    sys.exit(0 if ok_mem and ok_time else 1)


if __name__ == "__main__":
    main()
