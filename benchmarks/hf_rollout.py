"""Benchmark: a CPU rollout of ``RolloutDataModule`` + ``HFEngine`` against one plain ``model.generate`` call.

The work of ``trl_step.py`` (``_bench_task.py``: a 0.6M-parameter Qwen2, 16 prompts x 8 samples x up to 16 new
tokens at temperature 1). The baseline is what TRL does per step: one ``generate(do_sample=True)`` over the 128
rows, then one ``batch_decode``. Each case is a full rollout (generation, decoding, reward, padding into a
``RolloutBatch``):

- ``one seed``: the default (one seed per step, the prompt's KV cache shared by its samples);
- ``seed per prompt``: ``data.seed_per_prompt`` (every prompt drawn from its own generator, same single call);
- ``prefill not shared``: ``HFEngine(share_prompt_prefill=False)``, one seed;
- ``2 calls of 64``: ``HFEngine(batch_size=64, share_prompt_prefill=False)``, one seed (the engine's defaults
  before it made one call per rollout);
- ``prompt by prompt``: one ``generate`` call per prompt, as seeded prompts were generated before they shared a
  batch;
- ``plain generate, inference mode``: the baseline under ``torch.inference_mode()`` (as the engine decodes) instead
  of ``torch.no_grad()`` alone.

Cases alternate within each of ``--rounds`` rounds (after one warm-up round); the figure is each case's median and
its ratio to the baseline's median. Usage: ``python benchmarks/hf_rollout.py [--rounds 10] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _bench_task import prepare  # noqa: E402

from rlvr_lightning.data import HFEngine, RolloutDataModule  # noqa: E402
from rlvr_lightning.models import load_causal_lm  # noqa: E402

P, G, NEW = 16, 8, 16


class PromptByPrompt(HFEngine):
    """One ``generate`` call per prompt (each with its own seed)."""

    def generate(self, prompt_token_ids, sampling, *, seed=None):
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(prompt_token_ids)
        return [super(PromptByPrompt, self).generate([p], sampling, seed=[s])[0]
                for p, s in zip(prompt_token_ids, seeds)]


def _datamodule(model_dir: str, data: str, engine: HFEngine, per_prompt: bool) -> RolloutDataModule:
    dm = RolloutDataModule(tokenizer=model_dir, train_files=data, prompt_template="{prompt}", prompts_per_step=P,
                           num_generations=G, max_new_tokens=NEW, max_prompt_length=32, temperature=1.0,
                           rewards="_bench_task.leading_int", seed_per_prompt=per_prompt, engine=engine, seed=0)
    dm.setup("fit")
    return dm


def _plain(policy, dm: RolloutDataModule, step: int, inference: bool = False) -> None:
    """The baseline: one ``generate(do_sample=True)`` over the step's P * G rows, then ``batch_decode``; with
    ``inference``, under ``torch.inference_mode()``."""
    rows = [r.token_ids for r in dm.step_prompts(step) for _ in range(G)]
    width = max(map(len, rows))
    ids = torch.tensor([[dm.tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    with torch.inference_mode(inference), torch.no_grad():
        out = policy.generate(input_ids=ids, attention_mask=(ids != dm.tokenizer.pad_token_id).long(),
                              do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=NEW,
                              pad_token_id=dm.tokenizer.pad_token_id, eos_token_id=dm.tokenizer.eos_token_id)
    dm.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (each runs every case once)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=str(BENCH.parent / "runs" / "bench-trl"), help="model and data folder")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_dir, data = prepare(args.work)
    policy = load_causal_lm(model_dir, dtype="float32")
    cases = {
        "one seed": _datamodule(model_dir, data, HFEngine(), False),
        "seed per prompt": _datamodule(model_dir, data, HFEngine(), True),
        "prefill not shared": _datamodule(model_dir, data, HFEngine(share_prompt_prefill=False), False),
        "2 calls of 64": _datamodule(model_dir, data, HFEngine(batch_size=64, share_prompt_prefill=False), False),
        "prompt by prompt": _datamodule(model_dir, data, PromptByPrompt(), True),
    }
    for dm in cases.values():
        dm.sync_weights(policy)
    plain = {"plain generate (baseline)": False, "plain generate, inference mode": True}
    times: dict[str, list[float]] = {**{k: [] for k in plain}, **{k: [] for k in cases}}
    for step in range(args.rounds + 1):  # round 0 warms up
        for name, inference in plain.items():
            t0 = time.perf_counter()
            _plain(policy, cases["one seed"], step, inference)
            times[name].append(time.perf_counter() - t0)
        for name, dm in cases.items():
            t0 = time.perf_counter()
            dm.rollout(dm.step_prompts(step), seed=dm.sampling_seed(step))
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain generate (baseline)"][1:])
    print(f"{P} prompts x {G} samples x up to {NEW} new tokens, {args.threads} threads, median of {args.rounds}")
    print(f"{'case':32s} {'seconds':>9s} {'vs baseline':>12s}")
    for name, ts in times.items():
        med = statistics.median(ts[1:])
        print(f"{name:32s} {med:9.4f} {med / base:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
