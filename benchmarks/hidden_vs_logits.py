"""Benchmark: the module's hidden-state scoring path against its full-logits path, on a causal LM.

``rlvr_lightning.scoring.sequence_logprobs`` (forward + backward, float32) on a one-layer Qwen2 with H=512 and
V=65,536 (an output head of its own, logits of standard deviation ~2), 8 sequences of a 32-token prompt and a
512-token response: N = 4096 scored tokens, whose float32 logits are 1 GiB. Three measurements, each in a fresh
child process:

* ``body``: the same forward and backward with the loss on the final hidden states instead (no head): what any
  scoring path needs anyway (the transformer's activations and its parameters' gradients);
* ``hidden``: ``logits_path="hidden"``; the logits are never built;
* ``full``: ``logits_path="full"``; the model builds the ``(N, V)`` logits, reduced chunk by chunk.

The loss is ``sum(u * logp) + sum(w * entropy)`` over the response tokens (random ``u, w``). Printed: each path's
peak memory above the body's (the "extra" the target refers to; it includes the head's V x H weight gradient,
which every path returns) as a fraction of the logits' size; the best
time of each path (runs alternate between the paths; the ratio is hidden / full, both including the body); and
both paths' largest relative error (``max|x - ref| / max|ref|``) of log-probs, entropies and the parameter
gradient against float64 (the model in float64, full logits per block of rows, ``log_softmax``). PASS/FAIL
against the targets: extra memory <= 0.15x the logits, time <= 1.5x the full-logits path, errors <= 1e-5.

On CPU the peak is the resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``); on CUDA
``torch.cuda.max_memory_allocated``.

Usage: ``python benchmarks/hidden_vs_logits.py [--seqs 8] [--response 512] [--h 512] [--v 65536] [--repeats 2]
[--device cpu|cuda] [--skip-accuracy]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _peak_memory import peak_bytes_since, reset_peak

from rlvr_lightning.data.types import RolloutBatch
from rlvr_lightning.scoring import sequence_logprobs

MEM_TARGET, TIME_TARGET, ERR_TARGET = 0.15, 1.5, 1e-5
PROMPT = 32


def _model(h: int, v: int, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=v, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=1,
                         num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with torch.no_grad():  # the final norm makes |hidden| ~ sqrt(H): logits of std ~2, peaked and flat rows
        model.get_output_embeddings().weight.normal_(0.0, 2.0 / h**0.5)
    return model.to(device)


def _batch(seqs: int, response: int, v: int, device: str) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(0, v, (seqs, n), generator=g)  # noqa: E731
    ones = lambda n: torch.ones(seqs, n, dtype=torch.bool)  # noqa: E731
    batch = RolloutBatch(prompt_ids=ids(PROMPT), prompt_mask=ones(PROMPT), response_ids=ids(response),
                         response_mask=ones(response), group_ids=torch.arange(seqs), scores=torch.zeros(seqs),
                         truncated=torch.zeros(seqs, dtype=torch.bool))
    u, w = torch.randn(seqs, response, generator=g), torch.randn(seqs, response, generator=g)
    return batch.to(device), u.to(device), w.to(device)


def _step(method: str, model, batch, u, w) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + backward of one path (gradients into the parameters); ``(logp, entropy)`` (body: empty)."""
    model.zero_grad(set_to_none=True)
    if method == "body":
        input_ids, attention_mask, position_ids = batch.model_inputs()
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state[:, -(u.shape[1] + 1):-1]
        (hidden.sum(-1) * u).sum().backward()
        return torch.empty(0), torch.empty(0)
    logp, ent = sequence_logprobs(model, batch, grad=True, logits_path=method)
    ((logp * u).sum() + (ent * w).sum()).backward()
    return logp.detach(), ent.detach()


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def _child_run(method: str, a, memory: bool) -> None:
    """In a fresh process: print JSON with the peak bytes of one step above its inputs, and its time."""
    model = _model(a.h, a.v, "cpu")
    batch, u, w = _batch(a.seqs, a.response, a.v, "cpu")
    _step(method, model, batch.select([0]), u[:1], w[:1])  # warm-up
    res = {}
    if memory:
        model.zero_grad(set_to_none=True)
        base = reset_peak()
        _step(method, model, batch, u, w)
        res["peak_bytes"] = peak_bytes_since(base)
    t0 = time.perf_counter()
    _step(method, model, batch, u, w)
    res["time_s"] = time.perf_counter() - t0
    print(json.dumps(res))


def _reference(model, batch, u, w, rows: int = 256) -> tuple[torch.Tensor, ...]:
    """float64 log-probs, entropies and parameter gradient: the body once, the head per block of rows."""
    model = model.double()
    model.zero_grad(set_to_none=True)
    input_ids, attention_mask, position_ids = batch.model_inputs()
    T = batch.response_ids.shape[1]
    body = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state[:, -(T + 1):-1].reshape(-1, model.config.hidden_size)
    h = body.detach().requires_grad_(True)
    weight, labels = model.get_output_embeddings().weight, batch.response_ids.reshape(-1)
    logp, ent = [], []
    for s in range(0, h.shape[0], rows):
        logsm = torch.log_softmax(h[s:s + rows] @ weight.T, dim=-1)
        lp = logsm.gather(-1, labels[s:s + rows, None]).squeeze(-1)
        en = -(logsm.exp() * logsm).sum(-1)
        ((lp * u.reshape(-1)[s:s + rows].double()).sum() + (en * w.reshape(-1)[s:s + rows].double()).sum()).backward()
        logp.append(lp.detach())
        ent.append(en.detach())
    body.backward(h.grad)  # the body's gradient
    return torch.cat(logp), torch.cat(ent), _flat_grad(model)


def _errors(a, device: str) -> dict[str, dict[str, float]]:
    model = _model(a.h, a.v, device)
    batch, u, w = _batch(a.seqs, a.response, a.v, device)
    ours = {}
    for m in ("hidden", "full"):
        logp, ent = _step(m, model, batch, u, w)
        ours[m] = (logp.reshape(-1), ent.reshape(-1), _flat_grad(model))
    ref = _reference(model, batch, u, w)
    names = ("logp", "entropy", "grad")
    return {m: {k: float((x.double() - r).abs().max() / r.abs().max()) for k, x, r in zip(names, ours[m], ref)}
            for m in ours}


def _run_child(args: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _measure_cpu(a, size: list[str]) -> dict[str, dict]:
    res: dict[str, dict] = {m: {"times": []} for m in ("body", "hidden", "full")}
    for i in range(a.repeats):
        for m in res:  # alternate the paths so load on the machine hits both alike
            if m == "body" and i:
                continue
            r = _run_child(["--child", m, *size] + (["--memory"] if i == 0 else []))
            res[m]["times"].append(r.pop("time_s"))
            res[m].update(r)
    return res


def _measure_cuda(a) -> dict[str, dict]:
    model = _model(a.h, a.v, "cuda")
    batch, u, w = _batch(a.seqs, a.response, a.v, "cuda")
    res: dict[str, dict] = {m: {"times": []} for m in ("body", "hidden", "full")}
    for m in res:
        _step(m, model, batch, u, w)  # warm-up
    for _ in range(a.repeats):
        for m in res:
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            _step(m, model, batch, u, w)
            torch.cuda.synchronize()
            res[m]["times"].append(time.perf_counter() - t0)
            res[m]["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    return res


def _report(a, res: dict, err: dict) -> bool:
    logits_bytes, mib = a.seqs * a.response * a.v * 4, 2**20
    head_grad = a.v * a.h * 4
    print(f"device={a.device} N={a.seqs * a.response} (sequences {a.seqs} x response {a.response}, prompt {PROMPT}) "
          f"H={a.h} V={a.v} float32 forward+backward, 1-layer Qwen2, untied head; logits {logits_bytes / mib:.0f} MiB,"
          f" head weight gradient {head_grad / mib:.0f} MiB; torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    body = res["body"]["peak_bytes"]
    for m, r in res.items():
        above = r["peak_bytes"] - body
        share = above / logits_bytes
        extra = "" if m == "body" else f", above the body {above / mib:7.1f} MiB ({share:6.1%} of the logits)"
        times = ", ".join(f"{t:.2f}" for t in r["times"])
        print(f"  {m:6s} peak {r['peak_bytes'] / mib:7.1f} MiB{extra}   time {min(r['times']):6.2f} s (runs: {times})")
    mem = (res["hidden"]["peak_bytes"] - body) / logits_bytes
    ratio = min(res["hidden"]["times"]) / min(res["full"]["times"])
    verdict = {True: "PASS", False: "FAIL"}
    ok = [mem <= MEM_TARGET, ratio <= TIME_TARGET]
    print(f"memory: hidden extra / logits = {mem:.3f} (target <= {MEM_TARGET}) {verdict[ok[0]]}")
    print(f"time:   hidden / full         = {ratio:.3f} (target <= {TIME_TARGET}) {verdict[ok[1]]}")
    for m, e in err.items():
        detail = ", ".join(f"{k} {v:.1e}" for k, v in e.items())
        good = max(e.values()) <= ERR_TARGET
        ok.append(good or m == "full")
        print(f"error:  {m:6s} vs float64, max|x-ref|/max|ref|: {detail} (target <= {ERR_TARGET:.0e}"
              f"{'' if m == 'hidden' else ', for reference'}) {verdict[good]}")
    if not err:
        print("error:  skipped (--skip-accuracy)")
    return all(ok)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, default=8)
    p.add_argument("--response", type=int, default=512)
    p.add_argument("--h", type=int, default=512)
    p.add_argument("--v", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--skip-accuracy", action="store_true", help="skip the float64 reference")
    p.add_argument("--child", choices=["body", "hidden", "full", "accuracy"], help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    size = ["--seqs", str(a.seqs), "--response", str(a.response), "--h", str(a.h), "--v", str(a.v)]
    if a.child == "accuracy":
        print(json.dumps(_errors(a, "cpu")))
        return
    if a.child:
        _child_run(a.child, a, a.memory)
        return
    res = _measure_cuda(a) if a.device == "cuda" else _measure_cpu(a, size)
    err = {}
    if not a.skip_accuracy:
        err = _errors(a, "cuda") if a.device == "cuda" else _run_child(["--child", "accuracy", *size])
    sys.exit(0 if _report(a, res, err) else 1)


if __name__ == "__main__":
    main()
