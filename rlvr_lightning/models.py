"""Loading the policy / reference model and its tokenizer from a local folder or a hub name.

Three entry points:

- :func:`load_causal_lm`: a ``transformers`` causal LM from a checkpoint folder or hub name, or with
  ``from_scratch=True`` a seeded random-init model built from the config alone (a folder with only
  ``config.json`` is enough; used by smoke tests and the tiny demo model in ``assets/tiny-qwen2``).
- :func:`load_tokenizer`: the matching tokenizer, with a pad token guaranteed (EOS stands in when the
  checkpoint has none). Padding side is left to callers (prompts left-padded, responses right-padded).
- :func:`freeze`: turn a model into a frozen reference (no gradients, eval mode).
- :func:`build_policy` / :func:`build_reference`: what ``RLVRModule.configure_model`` loads: the policy, with LoRA
  adapters when ``model.lora`` is set (``rlvr_lightning.lora``), and the KL reference: under LoRA the policy with
  its adapters disabled (no second copy), otherwise a frozen second model.

Everything works offline from a local path. Remote code runs only with ``trust_remote_code=True``.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """``(path, is_local)``; raises ``FileNotFoundError`` for a missing local path that is not a hub name."""
    text = os.path.expanduser(os.fspath(path))
    if os.path.isdir(text):
        return text, True
    if _HUB_NAME.match(text) and not text.startswith("."):
        return text, False
    raise FileNotFoundError(f"model path {text!r} does not exist (and is not a hub name of the form 'org/name')")


@contextmanager
def _not_found_as_error(path: str, is_local: bool) -> Iterator[None]:
    """Turn the hub client's error for an unreachable name into one that names the path."""
    try:
        yield
    except OSError as err:
        if is_local:
            raise
        raise FileNotFoundError(
            f"model path {path!r} is not a local folder and could not be loaded as a hub name "
            f"(offline, or no such repository): {err}"
        ) from err


def _dtype(dtype: str) -> torch.dtype | str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_causal_lm(
    path: str,
    *,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    from_scratch: bool = False,
    seed: int = 0,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> PreTrainedModel:
    """A causal language model from a local folder or a hub name.

    Args:
        path: a local checkpoint folder or a hub name (``org/name``).
        dtype: parameter dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the checkpoint's own;
            float32 for ``from_scratch`` unless the config names one).
        attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``...; ``None`` lets transformers pick.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant) to save memory.
        from_scratch: build a random-init model from the config alone (no weights read), seeded by ``seed``.
        seed: seed of the random initialisation when ``from_scratch``; the global RNG is left untouched.
        trust_remote_code: allow model code shipped with the checkpoint to run.
        revision: hub revision (branch, tag or commit) for a hub name.

    Returns:
        The model, on CPU, in train mode.

    Raises:
        FileNotFoundError: ``path`` is neither an existing folder nor a loadable hub name.
        ValueError: ``dtype`` is not one of the choices above.

    Example:
        >>> model = load_causal_lm("assets/tiny-qwen2", from_scratch=True, seed=0)
        >>> model.config.hidden_size, model.training
        (128, True)
    """
    torch_dtype = _dtype(dtype)
    location, is_local = resolve_model_path(path)
    common = {"trust_remote_code": trust_remote_code, "revision": revision}
    with _not_found_as_error(location, is_local):
        if from_scratch:
            config = AutoConfig.from_pretrained(location, **common)
            if torch_dtype == "auto":
                torch_dtype = getattr(config, "dtype", None) or torch.float32
            kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config, **kwargs)
        else:
            has_safetensors = is_local and any(Path(location).glob("*.safetensors"))
            model = AutoModelForCausalLM.from_pretrained(
                location,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                use_safetensors=True if has_safetensors else None,
                **common,
            )
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``path`` (local folder or hub name), with a pad token (EOS when it has none).

    Raises:
        FileNotFoundError: ``path`` is neither an existing folder nor a loadable hub name.
        ValueError: the tokenizer has neither a pad nor an EOS token.

    Example:
        >>> tok = load_tokenizer("assets/tiny-qwen2")
        >>> tok.decode(tok("12+34=46")["input_ids"]), tok.pad_token, tok.eos_token
        ('12+34=46', '<pad>', '<|endoftext|>')
    """
    location, is_local = resolve_model_path(path)
    with _not_found_as_error(location, is_local):
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer at {location!r} has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def fsdp_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 (``fully_shard``) manages ``model`` or one of its submodules."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the KV cache among ``model``'s forward arguments and outputs: ``cache`` in recent transformers,
    ``past_key_values`` before. For a wrapper (PEFT's, :class:`~rlvr_lightning.lora.AdaptersDisabled`) its base
    model decides."""
    inner = getattr(model, "policy", model)  # AdaptersDisabled wraps the LoRA policy
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model`` a frozen reference: no parameter requires a gradient, eval mode. Returns the same object."""
    model.requires_grad_(False)
    return model.eval()


def build_policy(
    path: str, *, lora: dict[str, Any] | None, seed: int, gradient_checkpointing: bool = False,
    from_scratch: bool = False, **kwargs: Any,
) -> torch.nn.Module:
    """:func:`load_causal_lm` (``kwargs``: dtype, attn_implementation, trust_remote_code), wrapped with LoRA
    adapters (:func:`rlvr_lightning.lora.apply_lora`, seeded by ``seed``) when ``lora`` (a ``LoRAConfig`` as a
    dict) is given."""
    model = load_causal_lm(path, gradient_checkpointing=gradient_checkpointing, from_scratch=from_scratch,
                           seed=seed, **kwargs)
    if lora is None:
        return model
    from rlvr_lightning.lora import LoRAConfig, apply_lora

    return apply_lora(model, LoRAConfig(**lora), seed=seed)


def build_reference(
    policy: torch.nn.Module, path: str, *, policy_path: str, from_scratch: bool = False, seed: int = 0,
    gradient_checkpointing: bool = False, **kwargs: Any,
) -> torch.nn.Module:
    """The frozen KL reference at ``path``: a LoRA policy's own base (adapters disabled, no copy) when ``path`` is
    the policy's, else a second model loaded with :func:`load_causal_lm` (``kwargs``) and frozen; with
    ``from_scratch``, a reference at the policy's path is the policy's random init (same ``seed``).
    ``gradient_checkpointing`` is the policy's and ignored: the reference runs no backward pass."""
    from rlvr_lightning.lora import AdaptersDisabled, is_lora

    if is_lora(policy) and path == policy_path:
        return AdaptersDisabled(policy)
    same = from_scratch and path == policy_path
    return freeze(load_causal_lm(path, from_scratch=same, seed=seed, **kwargs))
