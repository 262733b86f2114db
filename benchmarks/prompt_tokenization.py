"""Benchmark: preparing a DAPO-Math-17k-sized training set, against tokenizing it record by record.

A synthetic set shaped like DAPO-Math-17k (17,917 distinct chat-message prompts of about 100 words, each one
``--copies`` times) is formatted and tokenized three ways in the same run, with the same tokenizer:

- baseline: every record through the chat template and the tokenizer one at a time (what setup did before);
- ``format_prompts``: de-duplicated first (``load_unique_records``, the default), each distinct text tokenized once
  in batches, no disk cache;
- cached: the same with a warm disk cache (the second run, a resumed run, the other ranks of the machine).

It prints the seconds of each (reading the file included) and their ratios to the baseline, and PASS/FAIL against
the targets: de-duplicated and batched at most 0.5x the baseline's time, with a warm cache at most 0.25x (the chat
template is still applied to every distinct prompt: the cache key is made of the texts). The token ids of every path
are checked equal to the baseline's.

Usage: ``python benchmarks/prompt_tokenization.py [--tokenizer runs/smollm2-135m-instruct] [--copies 2]``
(the tokenizer defaults to SmolLM2's when ``scripts/prepare_smollm2.py`` has made it, else the tiny character one).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rlvr_lightning.data.dedup import load_unique_records
from rlvr_lightning.data.prompts import PromptFormat, PromptSource, format_prompts

ROOT = Path(__file__).resolve().parent.parent

TIME_TARGET, CACHE_TARGET = 0.5, 0.25
WORDS = "the of a number find let be such that real positive integer sum value what is triangle area".split()


def write_set(path: Path, distinct: int, copies: int) -> None:
    rng = random.Random(0)
    rows = [{"prompt": [{"role": "user", "content": f"Problem {i}: " + " ".join(rng.choice(WORDS) for _ in range(100))
                         + " Answer: $Answer"}], "answer": str(i)} for i in range(distinct)] * copies
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def baseline(records, tokenizer) -> list[list[int]]:
    out = []
    for rec in records:
        text = tokenizer.apply_chat_template(rec.prompt, add_generation_prompt=True, tokenize=False)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    smol = ROOT / "runs" / "smollm2-135m-instruct"
    p.add_argument("--tokenizer", default=str(smol if smol.exists() else ROOT / "assets" / "tiny-qwen2"))
    p.add_argument("--distinct", type=int, default=17_917)
    p.add_argument("--copies", type=int, default=2)
    args = p.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    fmt = PromptFormat(chat_template=True, max_prompt_length=None)
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp) / "set.jsonl", str(Path(tmp) / "cache")
        write_set(data, args.distinct, args.copies)
        source = PromptSource(files=str(data))
        t0 = time.perf_counter()
        reference = baseline(source.load(), tokenizer)
        t_base = time.perf_counter() - t0
        timings = {}
        for name, cache_dir in (("dedup+batched", None), ("cache write", cache), ("cache read", cache)):
            t0 = time.perf_counter()
            records, _ = load_unique_records(source)
            kept, _ = format_prompts(records, tokenizer, fmt, cache_dir=cache_dir)
            timings[name] = time.perf_counter() - t0
            assert [r.token_ids for r in kept] == reference[:args.distinct], name
    print(f"tokenizer {args.tokenizer}: {args.distinct:,} distinct prompts x {args.copies} copies")
    print(f"baseline (record by record): {t_base:.1f} s")
    for name, t in timings.items():
        print(f"{name}: {t:.1f} s ({t / t_base:.2f}x the baseline)")
    ok = timings["dedup+batched"] <= TIME_TARGET * t_base and timings["cache read"] <= CACHE_TARGET * t_base
    print(f"{'PASS' if ok else 'FAIL'}: targets {TIME_TARGET}x (de-duplicated, batched) and {CACHE_TARGET}x (cached)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
