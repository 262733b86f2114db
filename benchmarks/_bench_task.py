"""The workload of the step benchmarks, shared by rlvr-lightning and TRL runs: a tiny random-init Qwen2 with a
character tokenizer, synthetic 3-digit additions, and an exact-match reward; plus ``StepClock``, a Lightning
callback that records when each training step ends.

The model and data are built once into a folder (:func:`prepare`) and loaded from there by both programs, so they
train exactly the same weights on exactly the same prompts. Only ``transformers``, ``tokenizers`` and ``torch``
are needed to build them (this file imports neither rlvr-lightning nor TRL at module level).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_BENCH = Path(__file__).resolve().parent

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list("0123456789") + ["+", "-", "*", "=", " "] + list("abcdefghijklmnopqrstuvwxyz")
_LEADING_INT = re.compile(r"^\s*(-?\d+)")


def build_char_tokenizer() -> Any:
    """A left-padding tokenizer with one token per character (45 tokens with the specials)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(SPECIALS + CHARS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False, model_max_length=256,
                                   padding_side="left")


def build_tiny_qwen2(tok: Any, seed: int = 0) -> Any:
    """A random-init Qwen2 of 0.6M parameters (hidden 128, 4 layers, 4 heads, 2 KV heads, tied embeddings)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=256, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, attention_dropout=0.0)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    return model


def make_rows(n: int = 4096, seed: int = 0, digits: int = 3) -> list[dict[str, str]]:
    """``n`` prompts ``"a+b="`` with ``digits``-digit operands and their sums as answers."""
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    rows = []
    for _ in range(n):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    return rows


def prepare(workdir: str | Path, seed: int = 0) -> tuple[str, str]:
    """``(model_dir, data_file)`` under ``workdir``, built on the first call and reused afterwards."""
    work = Path(workdir)
    model_dir, data_file = work / "bench-model", work / "bench-data.jsonl"
    if not (model_dir / "config.json").exists():
        tok = build_char_tokenizer()
        model = build_tiny_qwen2(tok, seed)
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    if not data_file.exists():
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_text("".join(json.dumps(r) + "\n" for r in make_rows(seed=seed)))
    return str(model_dir), str(data_file)


_RLVR_CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: {devices}
{strategy}  max_steps: {steps}
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {logs}, name: rlvr}}
  callbacks:
    - class_path: _bench_task.StepClock
      init_args: {{path: {clock}}}
checkpoint:
  every_n_train_steps: 1000000
  save_last: false
model:
  model: {model}
  optimizer:
    class_path: torch.optim.AdamW
    init_args: {{lr: 1.0e-4, weight_decay: 0.0}}
  max_grad_norm: 1.0
  share_prompt_prefix: true   # each prompt's prefix once per forward for its 8 samples (off by default)
data:
  train_files: {data}
  prompt_template: "{{prompt}}"
  prompts_per_step: 16
  num_generations: 8
  max_new_tokens: 16
  max_prompt_length: 32
  temperature: 1.0
  rewards: _bench_task.leading_int
  seed_per_prompt: {per_prompt}
"""


def rlvr_config(model: str, data: str, *, steps: int, logs: str | Path, clock: str | Path, ranks: int = 1,
                per_prompt: bool = False) -> str:
    """The ``rlvr fit`` YAML of the work: ``steps`` optimizer steps on ``ranks`` CPU processes (FSDP2 over gloo
    when more than one), a CSV log under ``logs``, a :class:`StepClock` writing to ``clock``, no checkpoints;
    ``per_prompt``: each prompt seeded on its own (rollouts then do not depend on the number of ranks)."""
    strategy = "" if ranks == 1 else (
        "  strategy:\n    class_path: lightning.pytorch.strategies.ModelParallelStrategy\n"
        f"    init_args: {{data_parallel_size: {ranks}, tensor_parallel_size: 1}}\n")
    return _RLVR_CONFIG.format(devices=ranks, strategy=strategy, steps=steps, logs=logs, clock=clock, model=model,
                               data=data, per_prompt=str(per_prompt).lower())


def leading_int(completions: list[str], answers: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion's leading integer equals the answer, else 0.0 (TRL's reward in the same work)."""
    out = []
    for c, a in zip(completions, answers):
        m = _LEADING_INT.match(c)
        out.append(1.0 if m and m.group(1) == str(a).strip() else 0.0)
    return out


def _callback_base() -> type:
    from lightning.pytorch import Callback

    return Callback


class StepClock(_callback_base()):
    """Records ``time.perf_counter()`` at the start of training and at the end of every training step, and writes
    ``{"start": t0, "ends": [...], "rss_peak_mib": ...}`` to ``path`` when training ends: the wall time of step k
    is ``ends[k] - ends[k - 1]`` (``ends[0] - start`` for the first), end to end as TRL's own step clock counts it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.start = 0.0
        self.ends: list[float] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        import resource

        rank = trainer.global_rank
        path = self.path if rank == 0 else f"{self.path}.rank{rank}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        Path(path).write_text(json.dumps({"start": self.start, "ends": self.ends, "rss_peak_mib": peak}))


def run_fit(cfg: Path, log: Path, threads: int) -> None:
    """``rlvr fit --config cfg`` in a subprocess from the repository root with ``threads`` torch threads and the
    benchmarks folder importable, its output into ``log``; raises with the log's tail when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(_BENCH), str(_BENCH.parent), os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "rlvr_lightning.cli", "fit", "--config", str(cfg)],
                              cwd=_BENCH.parent, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"rlvr fit --config {cfg} failed ({proc.returncode}):\n" + log.read_text()[-3000:])


def step_args(parser: Any, *, steps: int, threads: int, work: str) -> None:
    """Add the options every step benchmark takes: ``--runs``, ``--steps``, ``--warmup``, ``--threads``, ``--work``."""
    parser.add_argument("--runs", type=int, default=3, help="runs of each case, alternating")
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of each run's median")
    parser.add_argument("--threads", type=int, default=threads, help="torch threads (OMP_NUM_THREADS) per process")
    parser.add_argument("--work", default=work, help="model, data, logs and results")
