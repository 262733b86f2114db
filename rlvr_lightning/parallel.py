"""FSDP2 sharding of Hugging Face causal LMs, applied in ``RLVRModule.configure_model``.

Lightning's ``ModelParallelStrategy`` builds the device mesh (dimensions ``data_parallel`` and
``tensor_parallel``) and launches the processes; this module only tells torch's ``fully_shard`` where the
transformer blocks are. No distributed code of our own.
"""

from __future__ import annotations

import torch
from torch import nn


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``model``: modules whose class is in the model's ``_no_split_modules``.

    Raises:
        ValueError: if the model names no such class, or none is found.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(
            f"cannot find transformer blocks in {type(model).__name__}: it lists no `_no_split_modules` "
            f"({sorted(names)}) present in the model; shard it yourself in configure_model"
        )
    return blocks


def shard_model(model: nn.Module, mesh, *, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Apply FSDP2 (``fully_shard``) to each transformer block, then to the whole model.

    A LoRA policy (a PEFT model) is sharded through its base model, which becomes the FSDP2 root: PEFT's
    ``generate`` calls the base model directly, and the root's hooks must see that call.

    Args:
        model: a Hugging Face causal LM, or a PEFT model wrapping one.
        mesh: the device mesh from ``ModelParallelStrategy`` (its ``data_parallel`` dimension is used).
        param_dtype: compute dtype of gathered parameters (e.g. ``torch.bfloat16``) with fp32 gradient reduction;
            None keeps the parameters' own dtype.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dp_mesh = mesh["data_parallel"] if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names else mesh
    kwargs = {"mesh": dp_mesh}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    from rlvr_lightning.lora import is_lora

    root = model.get_base_model() if is_lora(model) else model
    for block in transformer_blocks(root):
        fully_shard(block, **kwargs)
    fully_shard(root, **kwargs)
    return model


def shard_models(models: list[nn.Module | None], mesh, param_dtype: str | None) -> None:
    """:func:`shard_model` on each model that is not None and has parameters of its own (a LoRA policy's base seen
    with adapters disabled is sharded as the policy); ``param_dtype`` by name (``"bfloat16"``; None: keep)."""
    from rlvr_lightning.models import DTYPES

    for model in models:
        if model is not None and any(True for _ in model.parameters()):
            shard_model(model, mesh, param_dtype=DTYPES[param_dtype] if param_dtype else None)
