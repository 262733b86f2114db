"""Token log-probs and entropy straight from the final hidden states and the output embedding.

A causal LM's head computes ``logits = hidden @ weight.T`` (shape ``(N, V)``), which at RL batch sizes is the
largest tensor of the step (16k tokens x 152k vocabulary = 9.7 GB in float32, as much again for its gradient).
:func:`linear_logprobs_and_entropy` never builds it: it walks the tokens in chunks of ``chunk_size`` rows,
computes each chunk's logits, reduces them to a log-prob and an entropy per token and drops them. The forward
saves only its inputs (references, no copies) and two ``(N,)`` vectors; the backward recomputes each chunk's
logits, forms their gradient in place and turns it into the chunk's rows of ``grad hidden`` and one
accumulated ``addmm`` into ``grad weight``. Two ``(chunk_size, V)`` float32 buffers, allocated once, are the
whole working set (for bf16/fp16 inputs also one such buffer in the input dtype, and a float32 ``(V, H)``
accumulator for ``grad weight``).

:func:`check_logprobs_and_entropy` is a guard for any such fused path: log-probs must be <= 0 and entropies
within ``[0, log V]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_LINEAR_CHUNK_SIZE = 128


def _chunk_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, start: int, end: int, out: Tensor
) -> Tensor:
    """``(hidden[start:end] @ weight.T + bias) / temperature`` in ``out``'s dtype (float32, or float64 for
    float64 inputs), written into ``out``."""
    z = out[: end - start]
    h = hidden[start:end]
    if hidden.dtype == out.dtype:
        if bias is None:
            torch.mm(h, weight.t(), out=z)
        else:
            torch.addmm(bias, h, weight.t(), out=z)
    else:  # half precision: the matmul's own output (what ``hidden @ weight.T`` holds), upcast
        zh = torch.mm(h, weight.t()) if bias is None else torch.addmm(bias, h, weight.t())
        z.copy_(zh)
        del zh
    if temperature != 1.0:
        z.div_(temperature)
    return z


def _acc_dtype(hidden: Tensor) -> torch.dtype:
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


class _LinearLogprobEntropy(torch.autograd.Function):
    """Chunked ``(logp, entropy)`` of ``hidden (N, H) @ weight (V, H).T [+ bias (V,)]`` with labels ``(N,)``;
    outputs are float32 ``(N,)`` (float64 for float64 inputs)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        temperature: float,
        chunk_size: int,
    ):
        n = hidden.shape[0]
        f32, zbuf, pbuf = _chunk_buffers(hidden, weight, chunk_size)
        logp = torch.empty(n, **f32)
        entropy = torch.empty(n, **f32)
        lse = torch.empty(n, **f32)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            z = _chunk_logits(hidden, weight, bias, temperature, start, end, zbuf)
            p = pbuf[: end - start]
            zmax = z.amax(dim=-1, keepdim=True)
            z.sub_(zmax)  # z - max(z) <= 0 from here on
            torch.exp(z, out=p)
            total = p.sum(dim=-1, keepdim=True)
            log_total = total.log()
            lse[start:end] = (zmax + log_total).squeeze(-1)
            logp[start:end] = (z.gather(-1, labels[start:end].unsqueeze(-1)) - log_total).squeeze(-1)
            # H = log(total) - sum(p (z - max)) / total: every term of the sum has one sign, so a plain
            # (cascaded) sum keeps float32 accuracy at large V; the product is formed in z's buffer
            entropy[start:end] = (log_total - z.mul_(p).sum(dim=-1, keepdim=True) / total).squeeze(-1)
        del zbuf, pbuf
        ctx.save_for_backward(hidden, weight, bias, labels, lse, entropy)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: Tensor | None, grad_entropy: Tensor | None):  # type: ignore[override]
        hidden, weight, bias, labels, lse, entropy = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None, None
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        n, v = hidden.shape[0], weight.shape[0]
        f32, zbuf, pbuf = _chunk_buffers(hidden, weight, chunk_size)
        half = hidden.dtype != f32["dtype"]
        grad_h = torch.empty_like(hidden) if need_h else None
        # grad weight accumulates over chunks in float32 (for half inputs in a float32 buffer, cast at the end)
        grad_w = torch.zeros(weight.shape, **f32) if need_w else None
        grad_b = torch.zeros(v, **f32) if need_b else None
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            z = _chunk_logits(hidden, weight, bias, temperature, start, end, zbuf)
            z.sub_(lse[start:end].unsqueeze(-1))  # log p
            p = torch.exp(z, out=pbuf[: end - start])
            g = _logit_grad(z, p, labels, entropy, grad_logp, grad_entropy, start, end, temperature)
            if grad_b is not None:
                grad_b.add_(g.sum(dim=0))
            gm = g.to(hidden.dtype) if half else g
            if grad_h is not None:
                torch.mm(gm, weight, out=grad_h[start:end])
            if grad_w is not None:
                h = hidden[start:end]
                if half:
                    grad_w.add_(torch.mm(gm.t(), h))
                else:
                    grad_w.addmm_(gm.t(), h)
            del gm
        del zbuf, pbuf
        if grad_w is not None and grad_w.dtype != weight.dtype:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None and grad_b.dtype != bias.dtype:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def _chunk_buffers(hidden: Tensor, weight: Tensor, chunk_size: int) -> tuple[dict, Tensor, Tensor]:
    """The accumulation dtype/device (as tensor-factory keywords) and two ``(rows, V)`` chunk buffers, reused by
    every chunk of the forward or the backward."""
    f32 = dict(dtype=_acc_dtype(hidden), device=hidden.device)
    rows = min(chunk_size, max(hidden.shape[0], 1))
    return f32, torch.empty(rows, weight.shape[0], **f32), torch.empty(rows, weight.shape[0], **f32)


def _logit_grad(
    z: Tensor, p: Tensor, labels: Tensor, entropy: Tensor, grad_logp: Tensor | None, grad_entropy: Tensor | None,
    start: int, end: int, temperature: float,
) -> Tensor:
    """dL/d(logits) of rows ``start:end``, built in ``z``'s buffer (``z`` holds log p on entry, ``p`` the probs).

    d logp / dz = onehot(y) - p ;  d H / dz = -p (z - E_p[z]) = -p (log p + H) ; both divided by the temperature.
    """
    g = z
    if grad_entropy is not None:
        g.add_(entropy[start:end].unsqueeze(-1)).mul_(grad_entropy[start:end].unsqueeze(-1))
        if grad_logp is not None:
            g.add_(grad_logp[start:end].unsqueeze(-1))
    else:
        g.copy_(grad_logp[start:end].unsqueeze(-1).expand_as(g))
    g.mul_(p).neg_()
    if grad_logp is not None:
        g.scatter_add_(-1, labels[start:end].unsqueeze(-1), grad_logp[start:end].unsqueeze(-1))
    if temperature != 1.0:
        g.div_(temperature)
    return g


def _check_inputs(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, temperature: float, chunk_size: int
) -> None:
    if hidden.dim() < 1:
        raise ValueError("hidden must have a trailing hidden dimension H, shape (..., H)")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must have shape (V, H) with H={hidden.shape[-1]} (hidden's last dimension), "
            f"got {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(
            f"hidden and weight must share dtype and device, got {hidden.dtype}/{hidden.device} "
            f"and {weight.dtype}/{weight.device}"
        )
    if not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point tensor, got dtype {hidden.dtype}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != weight.dtype):
        raise ValueError(
            f"bias must have shape (V,) = ({weight.shape[0]},) and dtype {weight.dtype}, "
            f"got {tuple(bias.shape)} {bias.dtype}"
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(hidden.shape[:-1])} (hidden without H), got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of token ids, got dtype {labels.dtype}")
    if (
        labels.device.type == "cpu"
        and labels.numel()
        and (bool(labels.min() < 0) or bool(labels.max() >= weight.shape[0]))
    ):
        raise ValueError(
            f"labels must lie in [0, V) = [0, {weight.shape[0]}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}] (padding positions need a valid id, e.g. 0)"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


def linear_logprobs_and_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_LINEAR_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """Log-prob of each label and entropy of each token distribution, from hidden states, without the logits.

    .. math:: z = (h W^\\top + b) / \\tau,\\quad \\log p_y = z_y - \\mathrm{LSE}(z),\\quad
        H = \\mathrm{LSE}(z) - \\textstyle\\sum_v \\mathrm{softmax}(z)_v z_v

    The same numbers as ``logprobs_and_entropy(hidden @ weight.T + bias, labels)``, computed ``chunk_size``
    tokens at a time so the ``(N, V)`` logits never exist; the backward recomputes each chunk's logits.
    Differentiable with respect to ``hidden``, ``weight`` and ``bias``; a weight tied to the input embedding
    receives both gradients summed by autograd, as with ``nn.Linear``. Softmax, log-sum-exp, entropy and the
    weight/bias gradients accumulate in float32; for bf16/fp16 inputs each chunk's logits are the
    half-precision matmul's output (the values ``hidden @ weight.T`` would hold), upcast to float32. Outputs
    are float32 (float64 inputs are computed and returned in float64). Peak extra memory is two
    ``(chunk_size, V)`` float32 buffers (one more in the input dtype for half inputs) besides the gradients.

    Labels are checked on CPU; on an accelerator the check would need a host sync, so an out-of-range id
    there fails in the gather instead.

    Args:
        hidden: final hidden states (after the last norm), shape ``(..., H)``; float32, bf16 or fp16
            (float64 works too, for checks).
        weight: the output embedding (``lm_head.weight``), shape ``(V, H)``; same dtype and device as
            ``hidden``.
        labels: token ids in ``[0, V)``, shape ``(...)`` (``hidden`` without ``H``).
        bias: optional output bias, shape ``(V,)``.
        temperature: the sampling temperature :math:`\\tau` the logits are divided by (> 0).
        chunk_size: tokens (rows) processed at a time; each chunk costs a ``(chunk_size, V)`` float32 buffer.

    Returns:
        ``(logp, entropy)``, each float32 (float64 for float64 inputs) of shape ``(...)``.

    Example:
        >>> hidden = torch.tensor([[0.0, 0.0], [0.0, 100.0]])
        >>> weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> logp, ent = linear_logprobs_and_entropy(hidden, weight, torch.tensor([0, 1]))
        >>> logp.round(decimals=4), ent.round(decimals=4)
        (tensor([-0.6931,  0.0000]), tensor([0.6931, 0.0000]))
    """
    _check_inputs(hidden, weight, bias, labels, temperature, chunk_size)
    lead = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    if not flat.is_contiguous():
        flat = flat.contiguous()
    logp, entropy = _LinearLogprobEntropy.apply(
        flat, weight, bias, labels.reshape(-1).long(), float(temperature), chunk_size
    )
    return logp.reshape(lead), entropy.reshape(lead)


def check_logprobs_and_entropy(
    logp: Tensor,
    entropy: Tensor,
    *,
    vocab_size: int,
    mask: Tensor | None = None,
    atol: float = 1e-4,
) -> None:
    """Raise if log-probs or entropies are impossible: :math:`\\log p \\le 0` and :math:`0 \\le H \\le \\log V`.

    A guard for fused or chunked log-prob kernels (one such kernel in the wild returned positive
    log-probs). It reads the tensors on the host, so it syncs an accelerator: on in tests, optional in runs.

    Args:
        logp: token log-probs, shape ``(...)``.
        entropy: token entropies in nats, shape ``(...)`` (same as ``logp``).
        vocab_size: V, the number of classes the distributions range over (>= 1).
        mask: optional bool mask, True = a real token; other positions are not checked. Shape ``(...)``.
        atol: slack for rounding, in nats.

    Raises:
        ValueError: naming the first offending position and value, and how many positions fail.

    Example:
        >>> check_logprobs_and_entropy(torch.tensor([-0.5, 0.0]), torch.tensor([0.3, 0.0]), vocab_size=4)
        >>> check_logprobs_and_entropy(torch.tensor([0.2]), torch.tensor([0.3]), vocab_size=4)
        Traceback (most recent call last):
        ...
        ValueError: 1 of 1 log-probs exceed 0 (+1e-04): first at index (0,), value 0.2
    """
    if logp.shape != entropy.shape:
        raise ValueError(
            f"logp and entropy must have the same shape, got {tuple(logp.shape)} and {tuple(entropy.shape)}"
        )
    if mask is not None and mask.shape != logp.shape:
        raise ValueError(f"mask must have shape {tuple(logp.shape)}, got {tuple(mask.shape)}")
    if not (isinstance(vocab_size, int) and vocab_size >= 1):
        raise ValueError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
    valid = torch.ones_like(logp, dtype=torch.bool) if mask is None else mask.bool()
    max_ent = math.log(vocab_size)
    lp, ent = logp.detach(), entropy.detach()
    checks = (
        (~torch.isfinite(lp), "log-probs are not finite", lp),
        (lp > atol, f"log-probs exceed 0 (+{atol:.0e})", lp),
        (~torch.isfinite(ent), "entropies are not finite", ent),
        (ent < -atol, f"entropies are below 0 (-{atol:.0e})", ent),
        (ent > max_ent + atol, f"entropies exceed log V = {max_ent:.4f} (+{atol:.0e})", ent),
    )
    for bad, what, values in checks:
        bad = bad & valid
        count = int(bad.sum())
        if count:
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{count} of {int(valid.sum())} {what}: first at index {first}, value {values[first].item():.4g}"
            )
