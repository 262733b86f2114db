"""The ``rlvr`` command: a LightningCLI over RLVRModule and RolloutDataModule, plus ``rlvr plot`` and ``rlvr export``.

    rlvr fit --config configs/par.yaml [--model.reweight.init_args.delta 0.3 ...] [--ckpt_path RUN/last.ckpt]
    rlvr validate --config configs/smoke.yaml
    rlvr fit --config configs/grpo.yaml --print_config
    rlvr plot RUN_DIR [RUN_DIR ...] -o curves.png [--ema 0.6]
    rlvr export RUN/checkpoints/last.ckpt OUT_DIR [--tokenizer PATH] [--dtype bfloat16]   (rlvr_lightning.export)

Components are chosen by ``class_path`` (a short class name works for built-ins and for any imported class, e.g.
``--model.reweight mypkg.MyReweight --model.reweight.factor 0.5``). The policy's path is linked into the
DataModule's tokenizer, and from there into a vLLM engine that names no model of its own, so one ``--model.model``
changes the policy, the reference, the tokenizer and the engine. A prompt source given on the command line replaces
the other kind named before it (``--data.train_files F`` replaces a config's ``train_dataset``, and the other way
round; the same for ``val_files`` / ``val_dataset``): the last one given wins.

Lightning's conventions hold: a logger whose ``save_dir`` is not given (the default ``CSVLogger``, the configs'
loggers, ``--trainer.logger TensorBoardLogger``) writes under ``trainer.default_root_dir`` (``runs`` unless set),
checkpoints go to the logger's version folder, and the progress bar counts rollout steps out of the run's total
(:class:`~rlvr_lightning.progress.RolloutProgressBar`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from rlvr_lightning.checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint
from rlvr_lightning.data import RolloutDataModule
from rlvr_lightning.module import RLVRModule
from rlvr_lightning.progress import RolloutProgressBar
from rlvr_lightning.quiet import quiet_third_party

# A logger's save_dir with this value is replaced by trainer.default_root_dir before the logger is made.
ROOT_DIR = "${trainer.default_root_dir}"

_SOURCE_PAIRS = {"train_files": "train_dataset", "train_dataset": "train_files",
                 "val_files": "val_dataset", "val_dataset": "val_files"}
_COMPONENT_KEY = re.compile(r'Parser key "model\.(advantage|clip|reweight|aggregation|kl|entropy_bonus)"')


class RLVRArgumentParser(LightningArgumentParser):
    """Adds the valid class names to an error about a loss component (``model.reweight`` etc.)."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        match = _COMPONENT_KEY.search(message)
        if match and "valid names" not in message:
            from rlvr_lightning.components import AXES

            axis = {"advantage": "Advantage", "clip": "Clip", "reweight": "Reweight", "aggregation": "Aggregation",
                    "kl": "KLPenalty", "entropy_bonus": "EntropyBonus"}[match.group(1)]
            base = next(a for a in AXES if a.__name__ == axis)
            names = sorted({cls.__name__ for cls in base._registry.values()})
            message = (f"{message.rstrip()}\n  valid names for model.{match.group(1)}: {', '.join(names)} "
                       f"(or the import path of a {axis} subclass, e.g. mypkg.MyClass)")
        return super().error(message, ex)


class RLVRCLI(LightningCLI):
    """LightningCLI with the policy path linked to the tokenizer and a ``last.ckpt`` kept in the run folder."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test (there is nothing to predict)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("model.model", "data.tokenizer")
        parser.add_lightning_class_args(AtomicModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 0,
            "checkpoint.every_n_train_steps": 50,
        })

    def before_instantiate_classes(self) -> None:
        """Refuse a model path that is neither a folder nor a hub name before anything is built or loaded; warn when
        the engine names a model other than the policy's; point loggers without a save_dir of their own at
        ``trainer.default_root_dir``."""
        from rlvr_lightning.models import resolve_model_path

        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None:
            resolve_log_dirs(config)
        for key in ("model.model", "model.reference_model"):
            path = config.get(key) if config is not None else None
            if path:
                try:
                    resolve_model_path(path)
                except FileNotFoundError as err:
                    self.parser.error(f"{key}: {err}")
        engine = config.get("data.engine") if config is not None else None
        engine_model = getattr(getattr(engine, "init_args", None), "model", None)
        if engine_model and config.get("model.model") and engine_model != config.get("model.model"):
            warnings.warn(f"data.engine.init_args.model={engine_model!r} differs from model.model="
                          f"{config.get('model.model')!r}: the engine starts from the former and gets the policy's "
                          "weights after each update; leave the engine's model unset to use the policy's path")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Any:
        """The trainer, with a :class:`RolloutProgressBar` when the bar is on and none is configured."""
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in [*given, *callbacks]):
            callbacks = [*callbacks, RolloutProgressBar()]
        return super()._instantiate_trainer(config, callbacks)


def prefer_command_line_sources(argv: list[str]) -> list[str]:
    """``argv`` where each ``--data.train_files`` (``train_dataset``, ``val_files``, ``val_dataset``) is followed by
    ``--data.<the other kind>=null``: a source given here replaces the other kind set before it (by a ``--config``
    or earlier on the command line) instead of clashing with it; the last one given wins."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key = arg[len("--data."):].split("=")[0].rstrip("+") if arg.startswith("--data.") else ""
        if key not in _SOURCE_PAIRS:
            out.append(arg)
            i += 1
            continue
        take = 1 if "=" in arg else 2  # the option with its value
        out.extend([*argv[i:i + take], f"--data.{_SOURCE_PAIRS[key]}=null"])
        i += take
    return out


def resolve_log_dirs(config: Any) -> None:
    """Set each logger's ``save_dir`` that is :data:`ROOT_DIR` to ``trainer.default_root_dir`` (the cwd if null)."""
    trainer = config.get("trainer")
    if trainer is None:
        return
    root = trainer.get("default_root_dir") or os.getcwd()
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = getattr(logger, "init_args", None)
        if init is not None and init.get("save_dir") == ROOT_DIR:
            init["save_dir"] = str(root)


def _trainer_defaults() -> dict[str, Any]:
    return {
        "default_root_dir": "runs",
        "logger": lazy_instance(CSVLogger, save_dir=ROOT_DIR, name="rlvr"),
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "max_epochs": -1,
        "plugins": lazy_instance(AtomicCheckpointIO),  # checkpoints written atomically, loaded weights_only
    }


def plot_main(argv: list[str]) -> int:
    """``rlvr plot``: draw training curves of one or more runs into a PNG."""
    from rlvr_lightning.plotting import plot_runs

    p = argparse.ArgumentParser(prog="rlvr plot", description="Plot training curves of RLVR runs.")
    p.add_argument("runs", nargs="+", help="run folders (searched for metrics.csv)")
    p.add_argument("-o", "--output", default="curves.png", help="output PNG path")
    p.add_argument("--ema", type=float, default=0.6, help="EMA smoothing factor in [0, 1) (paper: 0.6)")
    p.add_argument("--keys", nargs="*", default=None, help="metric columns to draw (default: the standard set)")
    args = p.parse_args(argv)
    panels = plot_runs(args.runs, args.output, ema=args.ema, keys=args.keys)
    print(f"wrote {args.output} ({len(panels)} panels: {', '.join(panels)})")
    return 0


def cli_main(args: list[str] | None = None, run: bool = True) -> RLVRCLI:
    """Run ``rlvr fit|validate|test ...`` in this process and return the CLI (its ``model``, ``trainer``); with
    ``run=False`` (and no subcommand in ``args``) only build them."""
    quiet_third_party()
    return RLVRCLI(
        RLVRModule,
        RolloutDataModule,
        args=prefer_command_line_sources(list(sys.argv[1:] if args is None else args)),
        seed_everything_default=0,
        trainer_defaults=_trainer_defaults(),
        parser_class=RLVRArgumentParser,
        save_config_kwargs={"overwrite": True},
        run=run,
        parser_kwargs={"description": "rlvr: RL with verifiable rewards on PyTorch Lightning. "
                                      "Also: `rlvr plot RUN_DIR [RUN_DIR ...] -o curves.png` draws training curves; "
                                      "`rlvr export CKPT OUT_DIR` writes a checkpoint's policy as a Hugging Face "
                                      "model folder."},
    )


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``rlvr`` command; returns the process exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "plot":
        return plot_main(argv[1:])
    if argv and argv[0] == "export":
        from rlvr_lightning.export import export_main

        return export_main(argv[1:])
    cli_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
