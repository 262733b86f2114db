"""``rlvr export``: the trained policy of a checkpoint as a Hugging Face model folder, with its tokenizer.

    rlvr export RUN/checkpoints/last.ckpt OUT_DIR [--tokenizer PATH] [--dtype bfloat16]

The folder is what ``save_pretrained`` writes (``config.json``, ``model.safetensors``, ``generation_config.json``,
tokenizer files), so ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and vLLM (``LLM(model=OUT_DIR)``) load it.
The policy is rebuilt from the checkpoint's hyper-parameters (``model.model``, ``dtype``, ``from_scratch``,
``lora``): a full fine-tuning checkpoint's weights are loaded into a model built from the config; a LoRA
checkpoint's adapters are loaded onto the base model (read from ``model.model``, or the seeded random init of a
``from_scratch`` run) and merged into it (PEFT's ``merge_and_unload``). A sharded FSDP2 checkpoint (a folder,
``save_distributed_checkpoint: true``) is read whole on CPU. ``rlvr_export.json`` in the folder records the source
checkpoint, its step and its LoRA settings.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr_lightning.checkpoint import load_checkpoint_file
from rlvr_lightning.models import DTYPES, build_policy, load_causal_lm

__all__ = ["export_checkpoint", "export_main", "load_checkpoint", "policy_from_checkpoint"]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Lightning checkpoint file, or a sharded (distributed) checkpoint folder read whole, on CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it holds no ``state_dict`` or no ``hyper_parameters`` (not a checkpoint of ``rlvr fit``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    if path.is_dir():
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        checkpoint = _load_distributed_checkpoint(path.resolve())
    else:
        checkpoint = load_checkpoint_file(path, map_location="cpu")
    for key in ("state_dict", "hyper_parameters"):
        if key not in checkpoint:
            raise ValueError(f"{str(path)!r} has no {key!r}: not a checkpoint written by `rlvr fit` (RLVRModule)")
    return checkpoint


def _policy_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The policy's entries of the module's state dict, without the ``policy.`` prefix."""
    return {k.removeprefix("policy."): v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}


def policy_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """The trained policy of a loaded checkpoint as a plain ``transformers`` model (LoRA merged), in eval mode.

    Raises:
        ValueError: the checkpoint's weights do not fit the model its hyper-parameters describe (the message
            names the missing and unexpected keys).
    """
    hp = checkpoint["hyper_parameters"]
    common = dict(dtype=hp.get("dtype", "float32"), trust_remote_code=hp.get("trust_remote_code", False))
    seed = int(checkpoint.get("rlvr", {}).get("seed", hp.get("seed") or 0))
    state = _policy_state(checkpoint)
    lora = hp.get("lora")
    if lora is None:  # every weight is in the checkpoint: the architecture comes from the config alone
        model = load_causal_lm(hp["model"], from_scratch=True, seed=seed, **common)
    else:  # the base from model.model (or its seeded random init), then the adapters
        model = build_policy(hp["model"], lora=lora, seed=seed, from_scratch=hp.get("from_scratch", False), **common)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if lora is not None:
        missing = [k for k in missing if "lora_" in k]  # the frozen base is not in the checkpoint
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint's weights do not fit {hp['model']!r} (lora={lora}): {len(missing)} missing, e.g. "
            f"{sorted(missing)[:5]}; {len(unexpected)} unexpected, e.g. {sorted(unexpected)[:5]}")
    if lora is not None:
        model = model.merge_and_unload()
    return model.eval()


def export_checkpoint(
    checkpoint_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, tokenizer: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write the policy of ``checkpoint_path`` to ``out_dir`` as a Hugging Face model folder with its tokenizer.

    Args:
        checkpoint_path: a ``.ckpt`` file (or a sharded checkpoint folder) written by ``rlvr fit``.
        out_dir: the folder to write (created; files of the same names are replaced).
        tokenizer: the tokenizer to save with it (default: the checkpoint's ``model.model``, which ``rlvr fit``
            also gives the DataModule).
        dtype: cast the weights before saving (``"bfloat16"``, ``"float16"``, ``"float32"``); None keeps the
            training dtype.

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import AutoTokenizer

    if dtype is not None and (dtype not in DTYPES or dtype == "auto"):
        raise ValueError(f"dtype must be one of {sorted(set(DTYPES) - {'auto'})}, got {dtype!r}")
    checkpoint = load_checkpoint(checkpoint_path)
    hp = checkpoint["hyper_parameters"]
    model = policy_from_checkpoint(checkpoint)
    if dtype is not None:
        model = model.to(DTYPES[dtype])
        model.config.dtype = DTYPES[dtype]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    source = tokenizer or hp["model"]
    AutoTokenizer.from_pretrained(source, trust_remote_code=hp.get("trust_remote_code", False)).save_pretrained(out)
    meta = {"checkpoint": str(Path(checkpoint_path).resolve()), "global_step": checkpoint.get("global_step"),
            "rollout_step": checkpoint.get("rlvr", {}).get("rollout_step"), "model": hp["model"],
            "lora": hp.get("lora"), "tokenizer": source}
    (out / "rlvr_export.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def export_main(argv: list[str]) -> int:
    """``rlvr export CKPT OUT_DIR``: see the module docstring."""
    p = argparse.ArgumentParser(prog="rlvr export", description="Write the trained policy of an `rlvr fit` checkpoint "
                                "as a Hugging Face model folder (LoRA merged) with its tokenizer.")
    p.add_argument("checkpoint", help="a .ckpt file (e.g. RUN/checkpoints/last.ckpt) or a sharded checkpoint folder")
    p.add_argument("out_dir", help="the model folder to write")
    p.add_argument("--tokenizer", default=None, help="tokenizer path or hub name (default: the run's model.model)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="cast the weights (default: the training dtype)")
    args = p.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out_dir, tokenizer=args.tokenizer, dtype=args.dtype)
    print(f"wrote {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
