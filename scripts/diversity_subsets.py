"""Make low-diversity and random training subsets of equal sizes (the paper's data-diversity experiment).

    python scripts/diversity_subsets.py --files dapo-math-17k.parquet --prompt-field prompt \
        --answer-field reward_model.ground_truth --model Qwen/Qwen2.5-Math-7B --clusters 1000 \
        --sizes 10001 5031 2538 1246 616 --out data/

writes ``low_diversity_<size>.jsonl`` and ``random_<size>.jsonl`` (fields ``prompt`` and ``answer``) and prints
each subset's mean pairwise cosine distance of prompt embeddings. Point ``data.train_files`` of
``configs/low_diversity.yaml`` at one of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlvr_lightning.data.subsets import (
    embed_prompts,
    kmeans,
    low_diversity_subset,
    mean_pairwise_cosine_distance,
    random_subset,
)
from rlvr_lightning.data.prompts import load_records
from rlvr_lightning.models import load_causal_lm, load_tokenizer


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", nargs="+", required=True, help="prompt files (.jsonl, .json, .parquet)")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--model", required=True, help="model (local folder or hub name) whose embeddings are used")
    p.add_argument("--from-scratch", action="store_true", help="random-init model from its config (tests)")
    p.add_argument("--clusters", type=int, default=1000, help="K of K-means (paper: 1000)")
    p.add_argument("--sizes", type=int, nargs="+", required=True, help="subset sizes")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    records = load_records(args.files, prompt_field=args.prompt_field, answer_field=args.answer_field)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, from_scratch=args.from_scratch, seed=args.seed).eval()
    texts = [r.prompt if isinstance(r.prompt, str) else " ".join(m["content"] for m in r.prompt) for r in records]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] or [tokenizer.pad_token_id] for t in texts]
    emb = embed_prompts(model, ids, batch_size=args.batch_size, pad_token_id=tokenizer.pad_token_id)
    labels, _ = kmeans(emb, min(args.clusters, len(records)), seed=args.seed)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for size in args.sizes:
        for kind, idx in (("low_diversity", low_diversity_subset(labels, size)),
                          ("random", random_subset(len(records), size, seed=args.seed))):
            path = out / f"{kind}_{size}.jsonl"
            with path.open("w") as f:
                for i in idx.tolist():
                    f.write(json.dumps({"prompt": records[i].prompt, "answer": records[i].answer}) + "\n")
            div = float(mean_pairwise_cosine_distance(emb[idx]))
            clusters = int(torch.unique(labels[idx]).numel())
            print(f"{path}: {size} prompts from {clusters} clusters, mean cosine distance {div:.4f}")
            written.append(path)
    return written


if __name__ == "__main__":
    main()
