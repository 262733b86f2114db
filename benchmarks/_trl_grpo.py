"""TRL's ``GRPOTrainer`` on the step benchmark's workload, timed step by step (run by ``trl_step.py``).

Runs in TRL's own virtualenv (TRL is no dependency of rlvr-lightning): it imports torch, transformers, datasets and
trl only. The model and data come from the folder ``trl_step.py`` prepared (``_bench_task.prepare``). One step is
one ``generate`` of P prompts x G samples, one forward/backward over the P*G completions, one AdamW update; with
``num_iterations=1`` TRL skips the old log-probs (on-policy). The settings mirror the shared harness
``trl_step_bench.py`` (fp32 on CPU, no KL, DAPO token-mean loss, eps 0.2, lr 1e-4 constant, grad-norm clip 1.0).

Writes JSON: the wall time of each step (end to end, between the ends of consecutive steps) and the time inside
``generate`` of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_LEADING_INT = re.compile(r"^\s*(-?\d+)")


def exact_int(prompts, completions, answer, **kwargs):
    """1.0 when the completion's leading integer equals the answer, else 0.0."""
    out = []
    for c, a in zip(completions, answer):
        m = _LEADING_INT.match(c)
        out.append(1.0 if m is not None and m.group(1) == a else 0.0)
    return out


def _trainer_class():
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """Adds up the seconds spent in ``generate`` per optimizer step."""

        gen_seconds: dict[int, float] = {}

        def _generate_single_turn(self, *a, **kw):
            t0 = time.perf_counter()
            out = super()._generate_single_turn(*a, **kw)
            step = self.state.global_step
            self.gen_seconds[step] = self.gen_seconds.get(step, 0.0) + time.perf_counter() - t0
            return out

    return TimedGRPOTrainer


def _clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        start, ends = 0.0, []

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    return StepClock()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-file", required=True)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    transformers.set_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    rows = [json.loads(line) for line in open(args.data_file) if line.strip()]
    batch = args.prompts * args.generations
    cfg = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=args.generations, num_iterations=1,
        max_steps=args.steps, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        use_vllm=False, beta=0.0, loss_type="dapo", epsilon=0.2, scale_rewards="group", learning_rate=1e-4,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch", max_grad_norm=1.0,
        use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False, gradient_checkpointing=False,
        eval_strategy="no",
        save_strategy="no", report_to="none", logging_strategy="steps", logging_steps=1, disable_tqdm=True,
        dataloader_num_workers=0, seed=0, data_seed=0,
    )
    clock = _clock()
    trainer = _trainer_class()(model=model, reward_funcs=exact_int, args=cfg, train_dataset=Dataset.from_list(rows),
                               processing_class=tok, callbacks=[clock])
    trainer.train()
    gen = trainer.gen_seconds
    with open(args.out, "w") as fh:
        json.dump({"start": clock.start, "ends": clock.ends, "gen_s": [gen.get(s, 0.0) for s in range(len(clock.ends))],
                   "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                   "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                                "torch": torch.__version__}}, fh)


if __name__ == "__main__":
    main()
