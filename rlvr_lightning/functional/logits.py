"""Token log-probs and entropy from logits in one chunked, memory-lean, exactly differentiable pass.

The naive path (``log_softmax`` then ``gather``, and ``-(p * log p).sum``) materializes several ``(N, V)``
tensors. :func:`logprobs_and_entropy` walks the rows in chunks of ``chunk_size`` tokens: the forward keeps at
most one or two ``(chunk_size, V)`` float32 temporaries alive and saves only the logits (a reference, no
copy), the labels and two ``(N,)`` vectors; the backward recomputes the softmax chunk by chunk and writes
straight into the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_SIZE = 512


def _chunk_fp32(logits: Tensor, start: int, end: int, temperature: float) -> Tensor:
    z = logits[start:end]
    if z.dtype != torch.float32:
        z = z.float()
    if temperature != 1.0:
        z = z / temperature
    return z


class _LogprobEntropy(torch.autograd.Function):
    """Chunked ``(logp, entropy)`` of 2-D logits ``(N, V)`` and labels ``(N,)``; outputs are float32
    ``(N,)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, logits: Tensor, labels: Tensor, temperature: float, chunk_size: int
    ):
        n = logits.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=logits.device)
        entropy = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            z = _chunk_fp32(logits, start, end, temperature)
            zmax = z.amax(dim=-1, keepdim=True)
            shifted = torch.sub(z, zmax)  # <= 0; with p, the two (chunk, V) temporaries of a float32 input
            p = shifted.exp()
            total = p.sum(dim=-1, keepdim=True)
            log_total = total.log()
            chunk_lse = (zmax + log_total).squeeze(-1)
            lse[start:end] = chunk_lse
            logp[start:end] = shifted.gather(-1, labels[start:end].unsqueeze(-1)).squeeze(-1) - log_total.squeeze(-1)
            # H = log(total) - E_p[z - max z]: every term p (z - max z) has one sign and torch's (cascaded) sum
            # keeps float32 accuracy at large V (a dot product of p and the unshifted z lost ~1e-4 at V = 152k)
            e_shift = shifted.mul_(p).sum(dim=-1) / total.squeeze(-1)
            entropy[start:end] = log_total.squeeze(-1) - e_shift
            del z, p, shifted
        ctx.save_for_backward(logits, labels, lse, entropy)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return logp, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: Tensor, grad_entropy: Tensor):  # type: ignore[override]
        logits, labels, lse, entropy = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], chunk_size):
            end = min(start + chunk_size, logits.shape[0])
            z = _chunk_fp32(logits, start, end, temperature)
            g = torch.sub(z, lse[start:end].unsqueeze(-1))  # log p
            p = g.exp()
            # d logp / dz = onehot - p ;  d H / dz = -p * (z - E_p[z]) = -p * (log p + H)
            g.add_(entropy[start:end].unsqueeze(-1))
            g.mul_(grad_entropy[start:end].unsqueeze(-1)).add_(grad_logp[start:end].unsqueeze(-1)).mul_(
                p
            ).neg_()
            del p
            idx = labels[start:end].unsqueeze(-1)
            g.scatter_add_(-1, idx, grad_logp[start:end].unsqueeze(-1))
            if temperature != 1.0:
                g.div_(temperature)
            grad[start:end] = g
            del g, z
        return grad, None, None, None


def _check(logits: Tensor, temperature: float, chunk_size: int) -> None:
    if logits.dim() < 1:
        raise ValueError("logits must have a trailing vocabulary dimension V, shape (..., V)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


def logprobs_and_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """Log-prob of each label and entropy of each token distribution, in one chunked pass.

    .. math:: z = \\text{logits} / \\tau,\\quad \\log p_y = z_y - \\mathrm{LSE}(z),\\quad
        H = \\mathrm{LSE}(z) - \\textstyle\\sum_v \\mathrm{softmax}(z)_v z_v

    Exact and differentiable (gradients of both outputs flow to ``logits``); each chunk is computed in
    float32, so bf16/fp16 logits work and the outputs are float32. Peak extra memory of the forward is about
    one or two ``(chunk_size, V)`` float32 buffers instead of several ``(N, V)`` tensors.

    Args:
        logits: unnormalized scores, shape ``(..., V)``; best contiguous (otherwise a copy is made).
        labels: token ids in ``[0, V)``, shape ``(...)``.
        temperature: the sampling temperature :math:`\\tau` the logits are divided by (> 0).
        chunk_size: tokens (rows) processed at a time.

    Returns:
        ``(logp, entropy)``, each float32 of shape ``(...)``.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [0.0, 100.0]])
        >>> logp, ent = logprobs_and_entropy(logits, torch.tensor([0, 1]))
        >>> logp, ent.round(decimals=4)  # the second entropy is 100 e^-100 ~ 4e-42, not exactly 0
        (tensor([-0.6931,  0.0000]), tensor([0.6931, 0.0000]))
    """
    _check(logits, temperature, chunk_size)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])} (logits without V), got {tuple(labels.shape)}"
        )
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    logp, entropy = _LogprobEntropy.apply(flat, labels.reshape(-1).long(), float(temperature), chunk_size)
    return logp.reshape(lead), entropy.reshape(lead)


def logprobs_from_logits(
    logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Log-prob of each label, :math:`\\log\\mathrm{softmax}(\\text{logits}/\\tau)_y`, chunked and
    differentiable.

    Args:
        logits: unnormalized scores, shape ``(..., V)``.
        labels: token ids in ``[0, V)``, shape ``(...)``.
        temperature: divide the logits by it (> 0).
        chunk_size: tokens processed at a time.

    Returns:
        float32 log-probs, shape ``(...)``.

    Example:
        >>> logprobs_from_logits(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.tensor([2]))
        tensor([-1.3863])
    """
    return logprobs_and_entropy(logits, labels, temperature=temperature, chunk_size=chunk_size)[0]


def entropy_from_logits(
    logits: Tensor, *, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` over the last dimension, chunked and differentiable.

    Args:
        logits: unnormalized scores, shape ``(..., V)``.
        temperature: divide the logits by it (> 0).
        chunk_size: tokens processed at a time.

    Returns:
        float32 entropy in nats, shape ``(...)``.

    Example:
        >>> entropy_from_logits(torch.zeros(1, 4))
        tensor([1.3863])
    """
    labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return logprobs_and_entropy(logits, labels, temperature=temperature, chunk_size=chunk_size)[1]
