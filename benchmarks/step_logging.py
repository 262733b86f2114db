"""Benchmark: the cost of logging a training step's scalars through Lightning's ``self.log`` (one call per key)
against ``rlvr_lightning.step_log.publish`` (the module's way: one stacked tensor, one host copy), on CPU.

A Lightning fit of a one-parameter module whose ``training_step`` logs ``--keys`` scalars (43 by default, as many
as ``RLVRModule`` logs on the benchmark work) by either path, or none (the baseline); each case runs ``--steps``
steps in a fresh Trainer, the cases alternate for ``--rounds`` rounds, and the figure of a case is the median over
rounds of its median step time. Printed: ms per step for each case and the logging cost over the baseline.

Usage: ``python benchmarks/step_logging.py [--keys 43] [--steps 200] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from rlvr_lightning.step_log import publish  # noqa: E402


class LoggingProbe(LightningModule):
    """Logs ``keys`` 0-dim tensors a step by ``how`` (``"self.log"``, ``"publish"`` or ``"none"``)."""

    def __init__(self, how: str, keys: int) -> None:
        super().__init__()
        self.how, self.keys = how, keys
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.ends: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        values = {f"train/m{k}": batch.sum() + k for k in range(self.keys)}
        if self.how == "self.log":
            for k, v in values.items():
                self.log(k, v, on_step=True, on_epoch=False)
        elif self.how == "publish":
            publish(self.trainer, values)
        self.ends.append(time.perf_counter())
        return (self.w**2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(how: str, keys: int, steps: int, root: str) -> float:
    """Median seconds between consecutive step ends, the first tenth left out."""
    module = LoggingProbe(how, keys)
    data = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=1)
    trainer = Trainer(accelerator="cpu", max_epochs=1, log_every_n_steps=1, logger=CSVLogger(root, name=how),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    gaps = [b - a for a, b in zip(module.ends[:-1], module.ends[1:])]
    return statistics.median(gaps[len(gaps) // 10:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=43)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    cases = ("none", "self.log", "publish")
    times: dict[str, list[float]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            for c in cases:
                times[c].append(run(c, args.keys, args.steps, root))
    med = {c: statistics.median(v) for c, v in times.items()}
    print(f"{args.keys} keys a step, {args.steps} steps x {args.rounds} rounds, torch threads "
          f"{torch.get_num_threads()}")
    for c in cases:
        runs = ", ".join(f"{t * 1e3:.2f}" for t in times[c])
        print(f"  {c:9s} {med[c] * 1e3:7.2f} ms/step (runs: {runs})")
    cost = {c: med[c] - med["none"] for c in ("self.log", "publish")}
    print(f"logging cost over the baseline: self.log {cost['self.log'] * 1e3:.2f} ms/step "
          f"({cost['self.log'] / args.keys * 1e3:.3f} ms a key), publish {cost['publish'] * 1e3:.2f} ms/step; "
          f"publish / self.log = {cost['publish'] / cost['self.log']:.3f}")


if __name__ == "__main__":
    main()
