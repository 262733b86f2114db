"""LoRA adapters through PEFT (the optional extra ``rlvr-lightning[lora]``): the policy trains low-rank adapters
on a frozen base model.

- :class:`LoRAConfig`: ``model.lora`` (rank, alpha, dropout, target modules); None trains every parameter.
- :func:`apply_lora`: wrap a causal LM with seeded adapters; only the adapters require gradients.
- :class:`AdaptersDisabled`: the policy with its adapters switched off, i.e. the frozen base: the KL reference
  under LoRA, with no second copy of the model.
- :func:`merged_weights`: the policy's weights under the base model's Hugging Face names with every adapter merged
  (``W + scale * B @ A``), gathered one tensor at a time from FSDP2 shards, the policy left untouched: what the
  vLLM engine loads after each update and what ``rlvr export`` writes.
- :func:`trainable_state` / :func:`check_trainable_state`: the adapters-only checkpoint and its check on resume
  (the base weights are rebuilt from ``model.model``, so they are not saved).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["AdaptersDisabled", "LoRAConfig", "adapters_only", "apply_lora", "check_adapters_only",
           "check_trainable_state", "is_lora", "lora_hparams", "merged_weights", "param_counts", "trainable_names",
           "trainable_state"]


@dataclass
class LoRAConfig:
    """Low-rank adapters ``W + (alpha / rank) * B @ A`` on the target linear layers (Hu et al., 2021).

    Args:
        rank: the rank ``r`` of ``B @ A``.
        alpha: the scale numerator: adapters are scaled by ``alpha / rank``.
        dropout: dropout on the adapters' input while training (seeded per rollout step, so resume stays exact).
        target_modules: names (last component) of the linear layers that get adapters, e.g.
            ``[q_proj, k_proj, v_proj, o_proj]``, or ``"all-linear"``: every linear layer but the output head.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"

    def __post_init__(self) -> None:
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"model.lora.rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"model.lora.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.lora.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("model.lora.target_modules is empty: name layers (e.g. [q_proj, v_proj]) or 'all-linear'")


def lora_hparams(lora: LoRAConfig | dict[str, Any] | None) -> dict[str, Any] | None:
    """``model.lora`` as a plain dict for the checkpoint's hyper-parameters (validated), or None."""
    if lora is None:
        return None
    return asdict(LoRAConfig(**lora) if isinstance(lora, dict) else lora)


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("model.lora needs PEFT: pip install 'rlvr-lightning[lora]' (or pip install peft)") from err
    return peft


def apply_lora(model: nn.Module, config: LoRAConfig, *, seed: int) -> nn.Module:
    """``model`` wrapped in a PEFT model with adapters initialized from ``seed`` (the global RNG is untouched).

    Raises:
        ValueError: a target module is not in the model (the message lists the model's linear layers).
    """
    peft = _peft()
    peft_config = peft.LoraConfig(r=int(config.rank), lora_alpha=config.alpha, lora_dropout=config.dropout,
                                  target_modules=config.target_modules, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return peft.get_peft_model(model, peft_config)
        except ValueError as err:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"model.lora.target_modules={config.target_modules!r}: {err}; the model's linear "
                             f"layers are {linear}") from err


def is_lora(model: nn.Module | None) -> bool:
    """Whether ``model`` is a PEFT model with LoRA adapters."""
    return model is not None and callable(getattr(model, "disable_adapter", None)) and hasattr(model, "peft_config")


class AdaptersDisabled(nn.Module):
    """The base model of a LoRA policy: the policy called with its adapters switched off.

    It holds no parameters of its own (the policy is not a submodule: nothing is saved or sharded twice); its
    train/eval mode is the policy's.

    Args:
        policy: a PEFT model (:func:`apply_lora`).
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self._policy = [policy]

    @property
    def policy(self) -> nn.Module:
        """The wrapped LoRA policy."""
        return self._policy[0]

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self._policy[0].training if "_policy" in self.__dict__ else True

    @training.setter
    def training(self, mode: bool) -> None:
        pass  # the mode is the policy's (set through train())

    def train(self, mode: bool = True) -> "AdaptersDisabled":
        self.policy.train(mode)
        return self

    def get_output_embeddings(self) -> nn.Module | None:
        """The policy's output head (the scoring's hidden-state path swaps it for the call)."""
        return self.policy.get_output_embeddings()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.policy.disable_adapter():
            return self.policy(*args, **kwargs)


def _full(tensor: Tensor) -> Tensor:
    """A DTensor gathered into a full tensor (a collective: every rank calls it), detached."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach()


def _delta(layer: nn.Module) -> Tensor | None:
    """``sum over active adapters of scale * B @ A`` of a LoRA linear layer (float32), or None if disabled."""
    lora = _peft().tuners.lora
    if not isinstance(layer, lora.Linear):
        raise NotImplementedError(f"merging LoRA into a {type(layer).__name__} layer is not supported (Linear only)")
    if layer.disable_adapters:
        return None
    delta = None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        if layer.use_dora.get(name, False):
            raise NotImplementedError("merging DoRA adapters is not supported")
        part = (_full(layer.lora_B[name].weight).float() @ _full(layer.lora_A[name].weight).float())
        part = (part.T if layer.fan_in_fan_out else part) * layer.scaling[name]
        delta = part if delta is None else delta + part
    return delta


def _lora_owner(key: str, layers: dict[str, nn.Module]) -> tuple[str | None, str]:
    """``(name of the LoRA layer that owns the state key, the rest of the key)``, or ``(None, key)``."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in layers:
            return head, ".".join(parts[i:])
    return None, key


def merged_weights(policy: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(Hugging Face name, full tensor)`` for every entry of the policy's base-model state dict.

    For a LoRA policy the adapters are merged into their base weights (``W + scale * B @ A``, computed in float32
    and cast to ``W``'s dtype) and the adapter tensors themselves are left out, so the names and shapes are those
    of the plain model; for any other model this is its ``state_dict``. DTensors (FSDP2) are gathered one at a
    time, so every rank must iterate together. The policy is not modified.
    """
    if not is_lora(policy):
        for key, tensor in policy.state_dict().items():
            yield key, _full(tensor)
        return
    lora = _peft().tuners.lora
    base = policy.get_base_model()
    layers = {name: m for name, m in base.named_modules() if isinstance(m, lora.LoraLayer)}
    for key, tensor in base.state_dict().items():
        owner, rest = _lora_owner(key, layers)
        if owner is None:
            yield key, _full(tensor)
            continue
        if not rest.startswith("base_layer."):
            continue  # the adapters themselves: merged into the base weight below
        full = _full(tensor)
        if rest == "base_layer.weight":
            delta = _delta(layers[owner])
            if delta is not None:
                full = (full.float() + delta.to(full.device)).to(full.dtype)
        yield f"{owner}.{rest.removeprefix('base_layer.')}", full


def trainable_names(module: nn.Module) -> set[str]:
    """Names of ``module``'s parameters that require gradients (the keys an adapters-only checkpoint holds)."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def trainable_state(module: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``state_dict`` (``module``'s) that belong to trainable parameters."""
    names = trainable_names(module)
    return {k: v for k, v in state_dict.items() if k in names}


def check_trainable_state(module: nn.Module, state_dict: dict[str, Any], source: str = "the checkpoint") -> None:
    """Raise ``ValueError`` unless ``state_dict`` holds exactly ``module``'s trainable parameters (the adapters).

    Raises:
        ValueError: naming up to five missing and five unexpected keys.
    """
    names = trainable_names(module)
    missing, unexpected = sorted(names - set(state_dict)), sorted(set(state_dict) - names)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not hold this run's LoRA adapters ({len(missing)} missing, e.g. {missing[:5]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:5]}): resume with the model.model and model.lora "
            "of the run that saved it")


def adapters_only(module: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``module``'s state dict as checkpoints hold it: for a LoRA policy (``module.policy``), only the trainable
    weights (the adapters: the frozen base is rebuilt from its path on resume); otherwise all of it."""
    return trainable_state(module, state_dict) if is_lora(getattr(module, "policy", None)) else state_dict


def check_adapters_only(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """For a LoRA policy, :func:`check_trainable_state` on a checkpoint being loaded (a no-op where the strategy
    has taken the weights out already, as FSDP2's does)."""
    if is_lora(getattr(module, "policy", None)) and "state_dict" in checkpoint:
        check_trainable_state(module, checkpoint["state_dict"])


def param_counts(model: nn.Module) -> dict[str, float]:
    """``{"model/trainable_params", "model/total_params"}`` of ``model`` (FSDP2 shards count at full size)."""
    params = list(model.parameters())
    return {"model/trainable_params": float(sum(p.numel() for p in params if p.requires_grad)),
            "model/total_params": float(sum(p.numel() for p in params))}
