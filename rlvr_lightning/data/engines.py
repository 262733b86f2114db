"""Choosing the rollout engine: vLLM where it can run, transformers ``generate`` elsewhere, or the one asked for.

``RolloutDataModule(engine=...)`` takes an engine object, or one of these names:

- ``"auto"`` (the default, also ``None``): :class:`~rlvr_lightning.data.vllm_engine.VLLMEngine` when vLLM is
  importable and a CUDA GPU is present, else :class:`~rlvr_lightning.data.hf_engine.HFEngine`. If the trainer then
  turns out to run on the CPU, the DataModule falls back to ``HFEngine`` at setup.
- ``"hf"``: ``HFEngine()``; ``"vllm"``: ``VLLMEngine()`` (an error naming the extra to install when vLLM is absent).

An engine built here starts from the policy's own weights: ``VLLMEngine(model=None)`` takes the model path from the
tokenizer the DataModule gives it (which the CLI links to ``--model.model``), and ``HFEngine`` samples from the
policy module itself.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch

from rlvr_lightning.data.hf_engine import HFEngine
from rlvr_lightning.data.types import RolloutEngine

__all__ = ["ENGINE_NAMES", "EngineName", "make_engine", "vllm_importable"]

EngineName = Literal["auto", "hf", "vllm"]
ENGINE_NAMES = ("auto", "hf", "vllm")


def vllm_importable() -> bool:
    """Whether ``import vllm`` would find the package (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def make_engine(spec: RolloutEngine | str | None) -> tuple[RolloutEngine, str]:
    """The engine ``spec`` names, and a short reason for the choice (for the log).

    Raises:
        ValueError: an unknown name (the valid ones are listed).
        ImportError: ``"vllm"`` without an importable vLLM.
    """
    if spec is not None and not isinstance(spec, str):
        return spec, "given"
    name = "auto" if spec is None else spec
    if name not in ENGINE_NAMES:
        raise ValueError(f"data.engine must be an engine object or one of {list(ENGINE_NAMES)}, got {name!r}")
    if name == "vllm" or (name == "auto" and vllm_importable() and torch.cuda.is_available()):
        from rlvr_lightning.data.vllm_engine import INSTALL_HINT, VLLMEngine

        if not vllm_importable():  # now, rather than at the first rollout
            raise ImportError(f"data.engine: vllm, but vLLM is not installed. {INSTALL_HINT}")
        return VLLMEngine(), "vLLM importable and a GPU present" if name == "auto" else "data.engine: vllm"
    if name == "hf":
        return HFEngine(), "data.engine: hf"
    return HFEngine(), "no GPU" if not torch.cuda.is_available() else "vLLM not installed"


def is_auto_vllm(spec: Any, engine: Any) -> bool:
    """Whether ``engine`` is a vLLM engine chosen by ``"auto"`` (which falls back to HF on a CPU trainer)."""
    return spec in (None, "auto") and not isinstance(engine, HFEngine)
