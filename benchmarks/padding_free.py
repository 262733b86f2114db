"""Benchmark: padding computed by fixed-size micro-batches against token-budget micro-batches sorted by length.

A forward over a micro-batch computes ``count * (longest prompt + longest response)`` tokens (prompts left-padded,
responses right-padded, each micro-batch cut to its own longest; ``rlvr_lightning.scoring.trimmed``). On a
synthetic length mix shaped like math-reasoning rollouts, one rank's rollout batch of P prompts x G responses
(prompt lengths log-normal, shared by a group; response lengths log-normal with a long tail, capped at
``--max-response`` where they count as truncated), shuffled as the module shuffles a mini-batch, this prints for
each way of cutting it the forwards, the tokens computed and the padding fraction (1 - real / computed):

* ``one batch``: the whole mini-batch in one forward (the baseline of padding);
* ``size``: ``micro_batch_size`` sequences at a time in mini-batch order (the module without a token budget);
* ``tokens``: ``micro_batch_tokens`` (``rlvr_lightning.batching.micro_batches``), the budget set to the largest
  micro-batch of ``size``, so that no forward is bigger than there (the same peak activation memory);
* ``tokens, as many forwards``: the smallest budget that needs no more forwards than ``size``.

The ratio of computed tokens ``tokens / size`` is what sorting saves. Pure arithmetic on the lengths: no model.

Usage: ``python benchmarks/padding_free.py [--prompts 64] [--group 8] [--micro-batch-size 16] [--seed 0]``
"""

from __future__ import annotations

import argparse

import torch

from rlvr_lightning.batching import micro_batches, padded_tokens


def length_mix(prompts: int, group: int, max_response: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt and response lengths, each shape ``(prompts * group,)``: prompts log-normal around 150 tokens
    (sigma 0.5, within [16, 1024]), one per group; responses log-normal around 700 tokens (sigma 0.9, within
    [8, max_response])."""
    g = torch.Generator().manual_seed(seed)
    prompt = (150 * torch.exp(0.5 * torch.randn(prompts, generator=g))).clamp(16, 1024).round().long()
    response = (700 * torch.exp(0.9 * torch.randn(prompts * group, generator=g))).clamp(8, max_response)
    return prompt.repeat_interleave(group), response.round().long()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--max-response", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    prompt, response = length_mix(a.prompts, a.group, a.max_response, a.seed)
    n = len(prompt)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed + 1))  # a shuffled mini-batch
    real = int((prompt + response).sum())
    by_size = micro_batches(order, a.micro_batch_size)
    budget = max(padded_tokens([g], prompt, response) for g in by_size)
    cut = lambda tokens: micro_batches(order, None, tokens=tokens, prompt_lengths=prompt,  # noqa: E731
                                       response_lengths=response)
    low, high = 1, budget  # the smallest budget with at most as many forwards as fixed-size micro-batches
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if len(cut(mid)) > len(by_size) else (low, mid)
    schemes = {"one batch": [order], f"size {a.micro_batch_size}": by_size, f"tokens {budget}": cut(budget),
               f"tokens {low}": cut(low)}
    truncated = float((response == a.max_response).float().mean())
    print(f"{n} sequences ({a.prompts} prompts x {a.group}); prompt tokens median {int(prompt.median())}, "
          f"response tokens median {int(response.median())}, mean {float(response.float().mean()):.0f}, "
          f"{truncated:.1%} truncated at {a.max_response}; real tokens {real}")
    computed = {}
    for name, groups in schemes.items():
        computed[name] = padded_tokens(groups, prompt, response)
        largest = max(padded_tokens([g], prompt, response) for g in groups)
        print(f"  {name:14s} forwards {len(groups):4d}, largest {largest:8d} tokens, computed {computed[name]:9d} "
              f"tokens, padding {1 - real / computed[name]:6.1%}")
    size, same_peak, same_count = list(computed.values())[1:]
    for what, tokens in (("same largest forward", same_peak), ("as many forwards", same_count)):
        print(f"token budget / fixed size, {what}: {tokens / size:.3f}x the tokens computed "
              f"(padding {1 - real / size:.1%} -> {1 - real / tokens:.1%})")


if __name__ == "__main__":
    main()
