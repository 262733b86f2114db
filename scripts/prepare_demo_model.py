"""Supervised warm-up of the tiny Qwen2 on arithmetic: the starting policy of the CPU demo.

A random-init model cannot be improved by RL (it never samples a correct answer, so every group's reward is
equal and every advantage is zero). This script teaches ``assets/tiny-qwen2`` the answer format and part of the
skill with teacher-forced next-token loss on ``prompt + answer + EOS``, the loss on the answer and EOS tokens
only, and stops while the model is still unreliable: RL then has room to raise the reward. It writes a normal
Hugging Face checkpoint (``config.json``, ``model.safetensors``, tokenizer files) that ``load_causal_lm`` and
vLLM read, and a ``warmup.json`` marker with the settings and the measured figures::

    python scripts/prepare_demo_model.py                    # -> runs/demo-model (skipped if already made)
    python scripts/prepare_demo_model.py --steps 300 --out runs/weaker --force

At the end it prints, on ``assets/arithmetic/val.jsonl``, the greedy accuracy, the accuracy of samples at
temperature 1 (``--samples`` per problem) and the mean token entropy of the sampled responses (nats). A response
counts as correct when its text before EOS equals the answer exactly. Seeded: the same settings give the same
weights and figures. What it leaves out: no validation-based early stopping, no mixed precision, no data
loader (the data set is a few thousand short lines held as token lists).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlvr_lightning.models import load_causal_lm, load_tokenizer

MARKER = "warmup.json"


def read_jsonl(path: Path) -> list[dict[str, str]]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def encode_problems(tokenizer, problems: list[dict[str, str]]) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids + [EOS])`` of each ``{"prompt", "answer"}`` row."""
    eos = tokenizer.eos_token_id
    return [
        (tokenizer(p["prompt"])["input_ids"], tokenizer(p["answer"])["input_ids"] + [eos]) for p in problems
    ]


def make_batch(pairs: list[tuple[list[int], list[int]]], *, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ``(input_ids, attention_mask, labels)``, each shape ``(B, L)``; labels are -100 off-answer."""
    width = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, a) in enumerate(pairs):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(a)
    return ids, mask, labels


def answer_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens. All arguments have shape ``(B, L)``."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def warmup(
    model: torch.nn.Module,
    pairs: list[tuple[list[int], list[int]]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup_steps: int = 50,
    seed: int = 0,
    pad_id: int = 0,
    log_every: int = 0,
) -> list[float]:
    """Train ``model`` in place on random batches of ``pairs``; returns the loss of every step.

    AdamW (betas 0.9/0.95, no weight decay), linear warm-up over ``warmup_steps`` then cosine decay to 10% of
    ``lr``, gradient norm clipped at 1. Batches are drawn with replacement from a generator seeded by ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(len(pairs), (batch_size,), generator=gen).tolist()
        loss = answer_loss(model, *make_batch([pairs[i] for i in idx], pad_id=pad_id))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:5d}  loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return losses


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: list[list[int]],
    *,
    temperature: float,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
) -> tuple[list[list[int]], list[float]]:
    """Generate a response for each prompt (greedy when ``temperature == 0``), without a KV cache.

    Returns the response token lists (EOS kept) and, for each generated token, the entropy in nats of the
    temperature-1 next-token distribution it was drawn from.
    """
    model.eval()
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out: list[list[int]] = [[] for _ in prompts]
    entropies: list[float] = []
    for _ in range(max_new_tokens):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        ent = -(logp.exp() * logp).sum(-1)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(-1)
        for i in (~done).nonzero().flatten().tolist():
            out[i].append(int(nxt[i]))
            entropies.append(float(ent[i]))
        done |= nxt == eos_id
        if bool(done.all()):
            break
        ids = torch.cat([ids, torch.where(done, pad_id, nxt)[:, None]], 1)
        mask = torch.cat([mask, (~done).long()[:, None]], 1)
    return out, entropies


def evaluate(model, tokenizer, problems: list[dict[str, str]], *, samples: int, seed: int = 0) -> dict[str, float]:
    """Greedy accuracy, sampled (T=1) accuracy over ``samples`` draws per problem, and mean sampled-token entropy."""
    prompts = [tokenizer(p["prompt"])["input_ids"] for p in problems]
    answers = [p["answer"] for p in problems]
    kw = {"max_new_tokens": 8, "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id}

    def correct(responses: list[list[int]], golds: list[str]) -> list[bool]:
        return [
            bool(r) and r[-1] == kw["eos_id"] and tokenizer.decode(r[:-1]).strip() == g
            for r, g in zip(responses, golds)
        ]

    greedy, _ = sample(model, prompts, temperature=0.0, **kw)
    gen = torch.Generator().manual_seed(seed)
    drawn, entropies = sample(model, prompts * samples, temperature=1.0, generator=gen, **kw)
    return {
        "greedy_accuracy": sum(correct(greedy, answers)) / len(answers),
        "sampled_accuracy": sum(correct(drawn, answers * samples)) / len(drawn),
        "mean_token_entropy": sum(entropies) / len(entropies),
        "samples": len(drawn),
    }


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo-model")
    parser.add_argument("--base", type=Path, default=ROOT / "assets" / "tiny-qwen2")
    parser.add_argument("--data", type=Path, default=ROOT / "assets" / "arithmetic")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=4, help="samples per val problem for the T=1 accuracy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="retrain even if a matching checkpoint exists")
    args = parser.parse_args()

    settings = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "base_config": file_hash(args.base / "config.json"),
        "train_data": file_hash(args.data / "train.jsonl"),
    }
    marker = args.out / MARKER
    if marker.exists() and not args.force:
        previous = json.loads(marker.read_text())
        if previous.get("settings") == settings:
            print(f"{args.out} is up to date: {json.dumps(previous['results'])}")
            return
    torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer(str(args.base))
    model = load_causal_lm(str(args.base), from_scratch=True, seed=args.seed)
    pairs = encode_problems(tokenizer, read_jsonl(args.data / "train.jsonl"))
    start = time.perf_counter()
    losses = warmup(
        model, pairs, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        pad_id=tokenizer.pad_token_id, log_every=100,
    )
    train_s = time.perf_counter() - start
    results = evaluate(model, tokenizer, read_jsonl(args.data / "val.jsonl"), samples=args.samples, seed=args.seed)
    results.update(final_loss=sum(losses[-50:]) / len(losses[-50:]), train_seconds=round(train_s, 1))

    args.out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    model.save_pretrained(args.out)
    for path in args.base.iterdir():  # the tokenizer files, as they are (a re-save would rewrite them as BPE)
        if path.is_file() and path.name != "config.json":
            shutil.copy(path, args.out / path.name)
    marker.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print(
        f"trained {args.steps} steps in {train_s:.0f} s; val greedy accuracy {results['greedy_accuracy']:.3f}, "
        f"sampled (T=1) accuracy {results['sampled_accuracy']:.3f} over {results['samples']} samples, "
        f"mean token entropy {results['mean_token_entropy']:.3f} nats -> {args.out}"
    )


if __name__ == "__main__":
    main()
