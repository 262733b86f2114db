"""Throughput of ``VLLMEngine.generate`` against a plain ``vllm.LLM.generate``, and weight-sync time.

Both paths run the same ``LLM`` with the same prompts, sampling settings and per-prompt seeds, so the ratio measures
what the engine adds (request building, output conversion). Target: ratio >= 0.9 (tokens/s of the best of
``--repeats`` alternating runs; the ratio of medians is printed too). The weight sync loads a fresh
random policy of the same architecture through ``VLLMEngine.update_weights``.

Run in the vLLM environment (``scripts/setup_vllm_cpu.sh`` on CPU)::

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/vllm_engine.py

The model is random (built from a config, no download); sizes are options. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlvr_lightning.data.types import SamplingConfig
from rlvr_lightning.data.vllm_engine import VLLMEngine

ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny-qwen2"


def build_model(path: str, *, hidden: int, layers: int, seed: int) -> torch.nn.Module:
    """A random Qwen2 on the ``assets/tiny-qwen2`` tokenizer (head dim 32), saved with its tokenizer to ``path``."""
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(ASSET)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = hidden, 3 * hidden, layers
    config.num_attention_heads, config.num_key_value_heads = hidden // 32, max(1, hidden // 64)
    config.initializer_range = 0.1
    config.layer_types = ["full_attention"] * layers
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(ASSET).save_pretrained(path)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from transformers import AutoTokenizer
    from vllm import SamplingParams

    with tempfile.TemporaryDirectory() as path:
        build_model(path, hidden=args.hidden, layers=args.layers, seed=0)
        tokenizer = AutoTokenizer.from_pretrained(path)
        prompts = [tokenizer(f"{i}+{3 * i + 7}=").input_ids for i in range(args.prompts)]
        sampling = SamplingConfig(
            n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, logprobs=True
        )

        t0 = time.perf_counter()
        engine = VLLMEngine(model=path, dtype=args.dtype, enforce_eager=True, max_model_len=256)
        engine.setup(tokenizer)
        llm = engine.llm
        start_s = time.perf_counter() - t0

        def plain(seed: int) -> int:
            # what a user writes with vLLM directly: the same requests, seeds and outputs
            params = [
                SamplingParams(
                    n=args.n,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_tokens=args.max_new_tokens,
                    logprobs=0,
                    stop_token_ids=[tokenizer.eos_token_id],
                    detokenize=False,
                    seed=seed * 1_000_003 % (2**31 - 1) + i * args.n,
                )
                for i in range(len(prompts))
            ]
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs)

        def wrapped(seed: int) -> int:
            groups = engine.generate(prompts, sampling, seed=seed)
            return sum(len(s.token_ids) for g in groups for s in g)

        plain(0), wrapped(0)  # warm-up
        times: dict[str, list[float]] = {"plain": [], "engine": []}
        tokens: dict[str, int] = {}
        for r in range(args.repeats):
            for name, fn in (
                (("plain", plain), ("engine", wrapped))
                if r % 2 == 0
                else (("engine", wrapped), ("plain", plain))
            ):
                t = time.perf_counter()
                tokens[name] = fn(r + 1)
                times[name].append(time.perf_counter() - t)
        assert tokens["plain"] == tokens["engine"], "the two paths generated different token counts"
        # best-of-repeats is the least disturbed by other load on the machine; the median is reported beside it
        tps = {k: tokens[k] / min(v) for k, v in times.items()}
        tps_median = {k: tokens[k] / statistics.median(v) for k, v in times.items()}

        new_policy = build_model(tempfile.mkdtemp(), hidden=args.hidden, layers=args.layers, seed=1)
        size_mb = sum(t.numel() * t.element_size() for t in new_policy.state_dict().values()) / 2**20
        sync: dict[str, float] = {}
        for bucket in (512, 0):
            engine.weight_sync_bucket_mb = bucket
            runs = []
            for _ in range(3):
                engine.update_weights(new_policy)
                runs.append(engine.last_sync_seconds)
            sync[f"bucket_{bucket}mb_s"] = statistics.median(runs)

    print(
        json.dumps(
            {
                "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
                "dtype": args.dtype,
                "hidden": args.hidden,
                "layers": args.layers,
                "prompts": args.prompts,
                "n": args.n,
                "max_new_tokens": args.max_new_tokens,
                "tokens_per_call": tokens["engine"],
                "engine_start_s": round(start_s, 1),
                "plain_tokens_per_s": round(tps["plain"], 1),
                "engine_tokens_per_s": round(tps["engine"], 1),
                "ratio": round(tps["engine"] / tps["plain"], 3),
                "ratio_of_medians": round(tps_median["engine"] / tps_median["plain"], 3),
                "policy_mb_fp32": round(size_mb, 1),
                **{k: round(v, 4) for k, v in sync.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
