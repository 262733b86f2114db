"""GPU memory per device of an RLVR run with FSDP2 and a colocated, sleeping vLLM engine: an estimate.

Prints a Markdown table (the one in ``docs/scaling.md``) for the recipes' settings, or for your own::

    python scripts/memory_sizing.py                                 # the recipes' table
    python scripts/memory_sizing.py --model qwen2.5-math-7b --gpus 8 --gpu-gib 80 --micro-batch 4

Parameters are counted exactly, from the model's architecture (built on the ``meta`` device: no weights, no
download; the shapes of the Qwen models below are those of their published ``config.json``; ``--config-json`` reads
any other). Everything else is arithmetic, in GiB, per GPU:

- training state: fp32 master weights, fp32 gradients and AdamW's two fp32 moments, sharded over the
  data-parallel ranks: ``16 N / D`` bytes;
- gathered bf16 weights: FSDP2 gathers one decoder layer at a time (two in flight with prefetching), plus the root
  module (embeddings, LM head, final norm) for the whole forward and backward;
- activations with gradient checkpointing: each layer's bf16 input (``L * b * S * h * 2`` bytes), plus the
  recomputed layer being worked on, ``34 * b * S * h`` bytes (the rule of thumb of Korthikanti et al. 2022 for one
  transformer layer with fused attention); ``b`` the micro-batch, ``S`` prompt + response tokens;
- logits: the response positions' bf16 logits and their gradient, ``2 * b * T * V * 2`` bytes;
- vLLM: ``gpu_memory_utilization`` of the GPU while it generates (bf16 weights, 1.5 GiB assumed for its activations
  and CUDA graphs, the rest KV cache at ``2 * L * kv_heads * head_dim * 2`` bytes per token); nothing while it sleeps.

"train" is the peak of the update (vLLM asleep), "rollout" the training state plus vLLM's share. Not measured on a
GPU: allocator fragmentation, NCCL buffers and the CUDA context (about 0.5-1 GiB) come on top.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
VLLM_OVERHEAD_GIB = 1.5
ARCHS = {  # from each model's config.json on the Hugging Face hub
    "qwen2.5-0.5b-instruct": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                  num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                  tie_word_embeddings=True),
    "qwen2.5-math-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-math-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


@dataclass
class Run:
    """One row of the table: a model on ``gpus`` GPUs of ``gpu_gib`` with the run's sizes."""

    model: str
    gpus: int
    gpu_gib: float
    micro_batch: int
    prompt_len: int
    response_len: int
    utilization: float


RECIPES = [  # configs/par.yaml (and every paper config), then configs/one_gpu.yaml on three GPU sizes
    Run("qwen2.5-math-7b", 8, 80, 8, 1024, 3072, 0.5),
    Run("qwen2.5-math-7b", 8, 80, 4, 1024, 3072, 0.5),
    Run("qwen2.5-0.5b-instruct", 1, 24, 8, 512, 1024, 0.35),
    Run("qwen2.5-0.5b-instruct", 1, 80, 8, 512, 1024, 0.35),
    Run("qwen2.5-math-1.5b", 1, 48, 8, 512, 1024, 0.35),
    Run("qwen2.5-math-1.5b", 1, 80, 8, 512, 1024, 0.35),
]


def architecture(name_or_path: str) -> dict:
    """The config fields of a known model name, or of a ``config.json`` file."""
    if name_or_path in ARCHS:
        return dict(ARCHS[name_or_path])
    path = Path(name_or_path)
    if path.is_file():
        return json.loads(path.read_text())
    raise SystemExit(f"unknown model {name_or_path!r}: one of {sorted(ARCHS)}, or a config.json path")


def parameter_counts(arch: dict) -> dict[str, int]:
    """Exact parameter counts of a Qwen2-architecture model, built on the meta device: total, one decoder layer, and
    the root module (everything outside the layers)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{k: v for k, v in arch.items() if k in Qwen2Config().to_dict() or k == "vocab_size"})
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    return {"total": total, "layer": layer, "root": total - layer * config.num_hidden_layers}


def estimate(run: Run) -> dict[str, float]:
    """The components (GiB per GPU) of ``run``; see the module docstring for the formulas."""
    arch = architecture(run.model)
    n = parameter_counts(arch)
    h, L, V = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    head_dim = h // arch["num_attention_heads"]
    S, b, T = run.prompt_len + run.response_len, run.micro_batch, run.response_len
    state = 16 * n["total"] / run.gpus
    gathered = 2 * n["root"] + 2 * 2 * n["layer"]
    activations = L * b * S * h * 2 + 34 * b * S * h
    logits = 2 * b * T * V * 2
    vllm = run.utilization * run.gpu_gib * GIB
    kv_bytes = vllm - 2 * n["total"] - VLLM_OVERHEAD_GIB * GIB
    kv_per_token = 2 * L * arch["num_key_value_heads"] * head_dim * 2
    out = {"params_b": n["total"] / 1e9, "state": state / GIB, "gathered": gathered / GIB,
           "activations": activations / GIB, "logits": logits / GIB, "vllm": vllm / GIB,
           "kv_seqs": max(kv_bytes, 0) / kv_per_token / S}
    out["train"] = out["state"] + out["gathered"] + out["activations"] + out["logits"]
    out["rollout"] = out["state"] + out["vllm"]
    return out


HEADER = ("| model (params) | GPUs | micro-batch x tokens | state | gathered | activations | logits | train | "
          "vLLM (util) | rollout | full-length sequences in KV cache |")


def table(runs: list[Run]) -> str:
    """The Markdown table of ``runs`` (GiB per GPU)."""
    lines = [HEADER, "|" + "|".join(["---"] * (HEADER.count("|") - 1)) + "|"]
    for r in runs:
        e = estimate(r)
        fits = "" if max(e["train"], e["rollout"]) <= r.gpu_gib else " (does not fit)"
        lines.append(
            f"| {r.model} ({e['params_b']:.2f}B) | {r.gpus} x {r.gpu_gib:g} GiB | {r.micro_batch} x "
            f"{r.prompt_len}+{r.response_len} | {e['state']:.1f} | {e['gathered']:.1f} | {e['activations']:.1f} | "
            f"{e['logits']:.1f} | {e['train']:.1f}{fits} | {e['vllm']:.1f} ({r.utilization:g}) | {e['rollout']:.1f} | "
            f"{e['kv_seqs']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help=f"one of {sorted(ARCHS)} or a config.json (default: the recipes' table)")
    p.add_argument("--gpus", type=int, default=8, help="data-parallel ranks (FSDP2 shards)")
    p.add_argument("--gpu-gib", type=float, default=80, help="memory of one GPU")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--response-len", type=int, default=3072)
    p.add_argument("--utilization", type=float, default=0.5, help="vLLM's gpu_memory_utilization")
    args = p.parse_args(argv)
    runs = RECIPES if args.model is None else [Run(args.model, args.gpus, args.gpu_gib, args.micro_batch,
                                                   args.prompt_len, args.response_len, args.utilization)]
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
