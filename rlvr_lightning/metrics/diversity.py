"""Response diversity per prompt (distinct-n, Self-BLEU, distinct answers), averaged over prompts.

Per-prompt values come from :mod:`rlvr_lightning.functional.diversity` and from :func:`num_distinct_answers`
(math-verify classes of the final answers, from the time-limited checker of :mod:`rlvr_lightning.rewards`), and are
added to float64 sum states with their prompt counts (``sum`` reduction: DDP-exact). Text processing runs on the
CPU in ``update``; with G responses per prompt Self-BLEU costs G BLEU evaluations and the answer count up to G^2
math-verify comparisons per prompt, so log it every few steps on large batches. Shapes: B responses, T response tokens.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from rlvr_lightning.functional.diversity import distinct_n, distinct_n_tokens, self_bleu
from rlvr_lightning.rewards import math_verify

__all__ = ["ResponseDiversity", "answer_classes", "distinct_per_group", "num_distinct_answers"]


def distinct_per_group(
    texts: Sequence[str], group_ids: Sequence[Any], keep: Sequence[bool] | None = None
) -> float:
    """Mean over prompt groups of the number of distinct responses (compared after stripping whitespace).

    With ``keep``, only the kept responses count (e.g. the correct ones: the distinct correct answers of a group);
    a group with none kept counts 0. Cheap enough to log on every training batch.

    Args:
        texts: decoded responses, length B.
        group_ids: the prompt group of each response, length B.
        keep: which responses count, length B (None: all).

    Returns:
        The mean count over the groups present (0.0 for an empty batch).

    Example:
        >>> distinct_per_group(["12+45", "12+45 ", "20+37", "x"], [0, 0, 0, 1], keep=[True, True, True, False])
        1.0
    """
    keep = [True] * len(texts) if keep is None else list(keep)
    if not len(texts) == len(group_ids) == len(keep):
        raise ValueError(f"lengths differ: {len(texts)} texts, {len(group_ids)} group ids, {len(keep)} keep flags")
    seen: dict[Any, set[str]] = {}
    for text, g, k in zip(texts, group_ids, keep):
        kept = seen.setdefault(g, set())
        if k:
            kept.add(text.strip())
    return sum(len(s) for s in seen.values()) / len(seen) if seen else 0.0


def answer_classes(
    texts: Sequence[str], *, equivalence: Literal["math_verify", "exact"] = "math_verify", **parse_kwargs: Any
) -> Tensor:
    """Group responses whose final answers are equivalent: an integer class id per response.

    With ``equivalence="math_verify"`` each text is parsed with ``math_verify.parse`` (its last boxed or final
    expression) and compared with the first member of each class found so far using ``math_verify.verify`` in both
    directions; the first match joins. This runs in a worker process with a time limit (see
    :class:`rlvr_lightning.rewards.AnswerEquivalence`); a group that overruns gets ``-1`` throughout. A text from
    which no answer can be extracted, or whose parsing raises, gets class ``-1``. With ``equivalence="exact"`` the
    stripped strings themselves are compared (for answers already extracted).

    Args:
        texts: responses (or extracted answers) to one prompt (length G).
        equivalence: ``"math_verify"`` or ``"exact"``.
        **parse_kwargs: forwarded to ``math_verify.parse`` (e.g. ``extraction_config``).

    Returns:
        long tensor of shape ``(G,)``: class ids numbered 0, 1, ... in order of first appearance, -1 for none.

    Example:
        >>> answer_classes(["7", " 7", "8", ""], equivalence="exact")
        tensor([ 0,  0,  1, -1])
    """
    return torch.tensor(math_verify.answer_classes(texts, equivalence=equivalence, **parse_kwargs), dtype=torch.long)


def num_distinct_answers(
    texts: Sequence[str], *, equivalence: Literal["math_verify", "exact"] = "math_verify", **parse_kwargs: Any
) -> Tensor:
    """Number of distinct final answers among the responses to one prompt (see :func:`answer_classes`).

    Responses without an extractable answer are not counted.

    Args:
        texts: responses to one prompt (length G).
        equivalence: ``"math_verify"`` (mathematical equivalence) or ``"exact"`` (string equality).
        **parse_kwargs: forwarded to ``math_verify.parse``.

    Returns:
        long scalar tensor.

    Example:
        >>> num_distinct_answers(["so $\\\\boxed{1/2}$", "it is $\\\\boxed{0.5}$", "$\\\\boxed{3}$", "none"])
        tensor(2)
    """
    ids = answer_classes(texts, equivalence=equivalence, **parse_kwargs)
    return (ids.max() + 1).clamp(min=0) if ids.numel() else torch.zeros((), dtype=torch.long)


class ResponseDiversity(Metric):
    """Mean over prompts of the diversity of each prompt's responses.

    ``compute()`` returns ``{"distinct_<n>"}`` for each n (words), ``"distinct_tok_<n>"`` (token ids, when
    ``token_ids`` were given), ``"self_bleu"`` (groups of two or more responses only) and
    ``"distinct_answers"`` (when ``answers=True``); each is a float64 mean over the groups it was computed on
    (NaN if none).

    Args:
        ngrams: n-gram sizes of distinct-n.
        self_bleu: compute Self-BLEU (``bleu_n_gram``-gram BLEU, no smoothing).
        answers: count distinct final answers with math-verify equivalence.
        bleu_n_gram: highest n-gram order of Self-BLEU.

    Example:
        >>> m = ResponseDiversity(ngrams=(1,), answers=False)
        >>> m.update(["a b", "a c", "x y z w", "x y z w"], torch.tensor([0, 0, 1, 1]))
        >>> {k: round(float(v), 3) for k, v in m.compute().items()}
        {'distinct_1': 0.625, 'self_bleu': 0.5}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        ngrams: Sequence[int] = (1, 2, 3, 4),
        self_bleu: bool = True,
        answers: bool = True,
        bleu_n_gram: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ngrams = tuple(ngrams)
        if any(not isinstance(n, int) or n < 1 for n in self.ngrams):
            raise ValueError(f"ngrams must be integers >= 1, got {self.ngrams!r}")
        self.use_self_bleu = self_bleu
        self.use_answers = answers
        self.bleu_n_gram = bleu_n_gram
        k = len(self.ngrams)
        self.add_state("distinct_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("distinct_tok_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        # [groups, groups with token ids, self-BLEU sum, groups with >= 2 responses, distinct-answer sum]
        self.add_state("sums", default=torch.zeros(5, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        texts: Sequence[str],
        group_ids: Tensor,
        token_ids: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Add a batch of prompt groups.

        Args:
            texts: decoded responses (length B).
            group_ids: prompt group of each response, shape ``(B,)``.
            token_ids: response tokens, shape ``(B, T)``, for the token-level distinct-n (optional).
            mask: True on real response tokens, shape ``(B, T)``; required with ``token_ids``.
        """
        if len(texts) != group_ids.shape[0]:
            raise ValueError(f"texts (length {len(texts)}) and group_ids {tuple(group_ids.shape)} must match")
        if token_ids is not None and (mask is None or token_ids.shape != mask.shape):
            raise ValueError("token_ids needs a mask of the same shape (B, T)")
        ids = group_ids.tolist()
        groups: dict[Any, list[int]] = {}
        for i, g in enumerate(ids):
            groups.setdefault(g, []).append(i)
        k = len(self.ngrams)
        dist = torch.zeros(k, dtype=torch.float64)
        dist_tok = torch.zeros(k, dtype=torch.float64)
        sums = torch.zeros(5, dtype=torch.float64)
        for members in groups.values():
            group_texts = [texts[i] for i in members]
            sums[0] += 1
            dist += torch.stack([distinct_n(group_texts, n=n) for n in self.ngrams])
            if token_ids is not None and mask is not None:
                idx = torch.tensor(members, device=token_ids.device)
                tok, msk = token_ids[idx].cpu(), mask[idx].cpu()
                dist_tok += torch.stack([distinct_n_tokens(tok, msk, n=n) for n in self.ngrams])
                sums[1] += 1
            if self.use_self_bleu and len(members) >= 2:
                sums[2] += self_bleu(group_texts, n_gram=self.bleu_n_gram)
                sums[3] += 1
            if self.use_answers:
                sums[4] += num_distinct_answers(group_texts).to(torch.float64)
        dev = self.sums.device
        self.distinct_sum += dist.to(dev)
        self.distinct_tok_sum += dist_tok.to(dev)
        self.sums += sums.to(dev)

    def compute(self) -> dict[str, Tensor]:
        """Means over prompt groups (see the class docstring for the keys)."""
        out = {f"distinct_{n}": self.distinct_sum[i] / self.sums[0] for i, n in enumerate(self.ngrams)}
        if self.sums[1] > 0:
            out.update(
                {
                    f"distinct_tok_{n}": self.distinct_tok_sum[i] / self.sums[1]
                    for i, n in enumerate(self.ngrams)
                }
            )
        if self.use_self_bleu:
            out["self_bleu"] = self.sums[2] / self.sums[3]
        if self.use_answers:
            out["distinct_answers"] = self.sums[4] / self.sums[0]
        return out
