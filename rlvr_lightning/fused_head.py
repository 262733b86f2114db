"""The hidden-state path: token log-probs and entropy of a causal LM without its ``(tokens, vocabulary)`` logits.

A Hugging Face causal LM ends its ``forward`` with ``logits = lm_head(hidden_states)``. :func:`head_logprobs` runs
that forward with the output head's ``forward`` swapped, for the call, for one that returns each kept position's
log-prob and entropy from :func:`~rlvr_lightning.functional.linear_logprobs_and_entropy` (a ``(B, T, 2)`` tensor)
in place of its logits. Everything else is the model's own: its other modules, its hooks and its autograd graph.
Under FSDP2 the head's weight is the gathered (unsharded) parameter inside the root module's forward and its
gradient is reduce-scattered after the backward, exactly as for the plain head; a tied input embedding gets both
gradients summed. A head weight that is still a ``DTensor`` inside the forward (tensor parallelism) is gathered
with ``full_tensor()``.

The swap is checked on every call: the head must be an ``nn.Linear`` and the model must return the head's output,
unchanged, as its ``logits``. A model that transforms them (logit soft-capping as in Gemma 2, a logit scale as in
Cohere or Granite) or never calls its head fails the check; it is remembered, a warning names the reason once,
and callers score it through full logits (:func:`hidden_path_unsupported` says why).
"""

from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from rlvr_lightning import functional as F

_UNSUPPORTED: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def hidden_path_unsupported(model: nn.Module) -> str | None:
    """Why ``model`` is scored through full logits (None: the hidden-state path has worked for it so far)."""
    return _UNSUPPORTED.get(model)


def _unsupported(model: nn.Module, reason: str) -> None:
    _UNSUPPORTED[model] = reason
    warnings.warn(f"{type(model).__name__}: the hidden-state log-prob path does not apply ({reason}); scoring "
                  f"with full logits", stacklevel=3)


def _full(x: Tensor | None) -> Tensor | None:
    """A ``DTensor`` gathered into a plain tensor (differentiably); anything else as it is."""
    return x.full_tensor() if x is not None and hasattr(x, "full_tensor") else x


@contextmanager
def _swapped_head(head: nn.Linear, labels: Tensor, temperature: float, produced: list) -> Iterator[None]:
    """While active, ``head(hidden (B, L, H))`` returns ``stack([logp, entropy], -1)``, shape ``(B, T, 2)``, for the
    positions ``L - T - 1 .. L - 2`` (those that predict ``labels (B, T)``) and appends it to ``produced``."""
    T = labels.shape[1]

    def forward(hidden: Tensor) -> Tensor:
        if hidden.dim() != 3 or hidden.shape[0] != labels.shape[0] or hidden.shape[1] < T + 1:
            produced.append(None)  # not the call we expect: behave as the plain head
            return nn.functional.linear(hidden, head.weight, head.bias)
        h = _full(hidden[:, -(T + 1):-1])
        weight, bias = _full(head.weight), _full(head.bias)
        if weight.dtype != h.dtype:  # e.g. under autocast
            weight = weight.to(h.dtype)
            bias = None if bias is None else bias.to(h.dtype)
        with torch.autocast(h.device.type, enabled=False):
            logp, entropy = F.linear_logprobs_and_entropy(h, weight, labels, bias=bias, temperature=temperature)
        out = torch.stack([logp, entropy], dim=-1)
        produced.append(out)
        return out

    had = "forward" in head.__dict__
    previous = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if had:
            head.forward = previous
        else:
            del head.forward


def head_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, labels: Tensor,
    *, temperature: float = 1.0, **model_kwargs: Any,
) -> tuple[Tensor, Tensor] | None:
    """Log-prob and entropy of each label under ``model`` through the hidden-state path, or None where it does not
    apply (then score with full logits; the reason is remembered, :func:`hidden_path_unsupported`).

    Args:
        model: a Hugging Face causal LM (``get_output_embeddings()``, ``logits_to_keep``).
        input_ids: prompt + response tokens, shape ``(B, L)``; the responses are its last ``T`` columns.
        attention_mask: True (1) on real tokens, shape ``(B, L)``.
        position_ids: positions, shape ``(B, L)``.
        labels: the response tokens, shape ``(B, T)``.
        temperature: the logits are divided by it (the sampling temperature).
        model_kwargs: more arguments of the forward (default ``use_cache=False``), e.g. a KV cache of the columns
            before ``input_ids`` (``attention_mask`` then covers both).

    Returns:
        ``(logp, entropy)``, float32 (float64 for a float64 model), each shape ``(B, T)``; or None.
    """
    if model in _UNSUPPORTED:
        return None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        _unsupported(model, f"its output head is {type(head).__name__}, not an nn.Linear")
        return None
    produced: list[Tensor | None] = []
    with _swapped_head(head, labels, temperature, produced):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    logits_to_keep=labels.shape[1] + 1, **{"use_cache": False, **model_kwargs})
    logits = getattr(out, "logits", None)
    if len(produced) != 1 or produced[0] is None or logits is not produced[0]:
        _unsupported(model, "its forward does not return its output head's result unchanged as the logits, e.g. "
                            "soft-capped or scaled logits")
        return None
    return logits[..., 0], logits[..., 1]


__all__ = ["head_logprobs", "hidden_path_unsupported"]
