"""``EvalMetrics``: the metrics of one evaluation set, and ``format_eval_table``, the results printed one row per set.

``RLVRModule.validation_step`` samples k responses to each question of a set
(:class:`~rlvr_lightning.data.evaluation.EvalSet`), scores them and feeds them to the set's :class:`EvalMetrics`:
Avg@k, Pass@k, Maj@k, token entropy, diversity and calibration, as torchmetrics sum states (exact over batches and
ranks). :func:`format_eval_table` prints the results, one row per set. Shapes: P questions, k samples per question,
B = P * k responses, T response tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric, SumMetric

from rlvr_lightning.functional.accuracy import group_counts, maj_at_k
from rlvr_lightning.functional.calibration import sequence_confidence
from rlvr_lightning.metrics.accuracy import AvgAtKInterval, PassAtK
from rlvr_lightning.metrics.calibration import BrierScore, CalibrationError, ConfidenceAUROC
from rlvr_lightning.metrics.diversity import ResponseDiversity, answer_classes
from rlvr_lightning.metrics.entropy import TokenEntropy

if TYPE_CHECKING:
    from rlvr_lightning.data.evaluation import EvalSet
    from rlvr_lightning.data.types import RolloutBatch

__all__ = ["EvalMetrics", "format_eval_table"]


class EvalMetrics(nn.Module):
    """The metrics of one evaluation set, fed with scored samples, k per question.

    ``compute()`` returns, as float64 scalars averaged over the questions (or responses, or tokens) of every update
    on every rank: ``avg@<k>`` (mean correctness) and, with ``bootstrap_resamples > 0``, the ends ``avg@<k>_ci_low``
    / ``avg@<k>_ci_high`` of its percentile bootstrap confidence interval over questions, ``pass@<k'>`` for each k'
    in ``ks`` (unbiased estimator), ``maj@<k>`` (majority vote over math-verify answer classes), ``entropy`` (mean
    token entropy), ``distinct_1``, ``distinct_2``, ``self_bleu`` (per question, averaged), ``distinct_answers``
    (answer classes per question), ``ece``, ``brier``, ``auroc`` (sequence confidence vs correctness),
    ``response_length`` and ``questions`` (the number evaluated). ``samples`` keeps this rank's per-question results
    (prompt, answer, scores, correctness, answer classes) since the last :meth:`reset`.

    Args:
        k: samples per question.
        ks: the k values of Pass@k.
        correct_threshold: a response whose score reaches this is correct.
        confidence: how a response's confidence comes from its log-probs (see ``sequence_confidence``).
        n_bins: bins of the expected calibration error.
        bootstrap_resamples: resamples of the confidence interval of Avg@k (0: none).
        confidence_level: its confidence level.
    """

    def __init__(
        self,
        k: int,
        ks: tuple[int, ...] = (1,),
        *,
        correct_threshold: float = 0.5,
        confidence: Literal["mean_logprob", "sum_logprob", "min_prob"] = "mean_logprob",
        n_bins: int = 15,
        bootstrap_resamples: int = 1000,
        confidence_level: float = 0.95,
    ) -> None:
        super().__init__()
        if any(kk > k for kk in ks):
            raise ValueError(f"Pass@k needs 1 <= k <= n; got ks={tuple(ks)} with n={k} samples per question")
        self.k, self.ks = k, tuple(ks)
        self.correct_threshold, self.confidence = correct_threshold, confidence
        self.accuracy = PassAtK(ks=self.ks, majority=True)
        self.interval = (AvgAtKInterval(k, num_resamples=bootstrap_resamples, level=confidence_level)
                         if bootstrap_resamples > 0 else None)
        self.entropy = TokenEntropy()
        self.diversity = ResponseDiversity(ngrams=(1, 2), self_bleu=True, answers=False)
        self.ece = CalibrationError(n_bins=n_bins)
        self.brier = BrierScore()
        self.auroc = ConfidenceAUROC()
        self.distinct_answers = MeanMetric()
        self.response_length = MeanMetric()
        self.questions = SumMetric()
        self.samples: list[dict[str, Any]] = []

    @classmethod
    def for_set(cls, eval_set: EvalSet, *, correct_threshold: float = 0.5) -> EvalMetrics:
        """The metrics of ``eval_set``: its k, Pass@k values and confidence-interval settings."""
        return cls(eval_set.k, eval_set.ks, correct_threshold=correct_threshold,
                   bootstrap_resamples=eval_set.bootstrap_resamples, confidence_level=eval_set.confidence_level)

    def update(self, batch: RolloutBatch, logp: Tensor, entropy: Tensor, valid: Tensor | None = None) -> None:
        """Add the scored samples of P questions.

        Args:
            batch: B = P * k responses; ``group_ids`` in ``[0, P)`` give each response's question.
            logp: log-prob of each response token under the evaluated policy, shape ``(B, T)``.
            entropy: the policy's entropy at each response token, shape ``(B, T)``.
            valid: which questions count, shape ``(P,)`` (None: all; padding questions are False).
        """
        gid = batch.group_ids.long()
        num_q = int(gid.max()) + 1 if len(batch) else 0
        n, _ = group_counts(torch.ones_like(gid), gid)
        if len(n) != num_q or bool((n != self.k).any()):
            raise ValueError(
                f"EvalMetrics(k={self.k}) needs exactly {self.k} responses for each question 0..P-1, "
                f"got counts {n.tolist()}"
            )
        mask = batch.response_mask
        correct = batch.scores >= self.correct_threshold  # (B,)
        order = torch.argsort(gid.cpu(), stable=True).view(num_q, self.k)  # (P, k) response indices
        correct_pk = correct.cpu()[order]
        answer_ids = torch.stack(
            [answer_classes([batch.completions[int(i)] for i in row]) for row in order]
        )  # (P, k)
        maj = maj_at_k(answer_ids, correct_pk)
        q_ok = torch.ones(num_q, dtype=torch.bool) if valid is None else valid.bool().cpu()
        r_ok = q_ok[gid.cpu()].to(mask.device)  # (B,)
        n_q, c_q = group_counts(correct_pk.flatten().long(), torch.arange(num_q).repeat_interleave(self.k))
        self.accuracy.update(n_q[q_ok], c_q[q_ok], maj[q_ok])
        if self.interval is not None:
            self.interval.update(c_q[q_ok])
        self.entropy.update(entropy[r_ok], mask[r_ok])
        conf = sequence_confidence(logp[r_ok], mask[r_ok], kind=self.confidence)
        self.ece.update(conf, correct[r_ok])
        self.brier.update(conf, correct[r_ok])
        self.auroc.update(conf, correct[r_ok])
        kept = r_ok.nonzero().flatten().tolist()
        self.diversity.update(
            [batch.completions[i] for i in kept], gid[r_ok], batch.response_ids[r_ok], mask[r_ok]
        )
        classes = (answer_ids.amax(-1) + 1).clamp(min=0).to(torch.float64)[q_ok]
        self.distinct_answers.update(classes, weight=torch.ones_like(classes))
        lengths = mask[r_ok].sum(-1).to(torch.float64)
        self.response_length.update(lengths, weight=torch.ones_like(lengths))
        self.questions.update(q_ok.sum().to(torch.float64))
        self._keep_samples(batch, order, correct_pk, answer_ids, q_ok)

    def _keep_samples(
        self, batch: RolloutBatch, order: Tensor, correct: Tensor, answer_ids: Tensor, q_ok: Tensor
    ) -> None:
        """Append each valid question's prompt, answer, scores, correctness and answer classes to ``samples``.

        Args:
            batch: the scored responses.
            order: each question's response indices, shape ``(P, k)``.
            correct: correctness of each question's responses, shape ``(P, k)``.
            answer_ids: answer class of each question's responses, shape ``(P, k)``.
            q_ok: which questions count, shape ``(P,)``.
        """
        scores = batch.scores.detach().cpu().tolist()
        for q in q_ok.nonzero().flatten().tolist():
            idx = order[q].tolist()
            self.samples.append(
                {
                    "prompt": batch.prompts[idx[0]] if batch.prompts else "",
                    "answer": batch.answers[idx[0]] if batch.answers else "",
                    "scores": [scores[i] for i in idx],
                    "correct": correct[q].tolist(),
                    "answer_ids": answer_ids[q].tolist(),
                }
            )

    def compute(self) -> dict[str, Tensor]:
        """The set's metrics (keys in the class docstring), synced over ranks."""
        acc = self.accuracy.compute()
        out = {f"avg@{self.k}": acc["avg"]}
        if self.interval is not None:
            ci = self.interval.compute()
            out[f"avg@{self.k}_ci_low"], out[f"avg@{self.k}_ci_high"] = ci["low"], ci["high"]
        out.update({f"pass@{kk}": acc[f"pass@{kk}"] for kk in self.ks})
        out[f"maj@{self.k}"] = acc["maj"]
        out["entropy"] = self.entropy.compute()["all"]
        div = self.diversity.compute()
        out.update({key: div[key] for key in ("distinct_1", "distinct_2", "self_bleu")})
        out["distinct_answers"] = self.distinct_answers.compute()
        out["ece"] = self.ece.compute()
        out["brier"] = self.brier.compute()
        out["auroc"] = self.auroc.compute()
        out["response_length"] = self.response_length.compute()
        out["questions"] = self.questions.compute()
        return {key: v.detach().to(torch.float64) for key, v in out.items()}

    def reset(self) -> None:
        """Clear every metric and the kept samples."""
        for m in self.children():
            m.reset()
        self.samples = []


_COLUMNS = (
    ("avg@{k}", "Avg@k"),
    ("pass@{k}", "Pass@k"),
    ("maj@{k}", "Maj@k"),
    ("entropy", "entropy"),
    ("distinct_2", "distinct-2"),
    ("self_bleu", "self-BLEU"),
    ("ece", "ECE"),
    ("auroc", "AUROC"),
)


def format_eval_table(
    results: dict[str, dict[str, float]], ks: dict[str, int], questions: dict[str, int]
) -> str:
    """A plain-text table, one row per set: questions, k, Avg@k and its confidence interval, Pass@k, Maj@k,
    entropy, diversity, calibration.

    Args:
        results: per set, metric values keyed as logged without the ``val/<set>/`` prefix (``"avg@4"``, ...).
        ks: per set, its k.
        questions: per set, the number of questions evaluated.
    """
    header = ["set", "questions", "k"] + [title for _, title in _COLUMNS]
    header.insert(4, "Avg@k-CI")
    rows = [header]
    for name, values in results.items():
        k = ks[name]
        cells = [name, str(questions.get(name, "")), str(k)]
        for key, _ in _COLUMNS:
            v = values.get(key.format(k=k))
            cells.append("-" if v is None or math.isnan(v) else f"{v:.4f}")
        low, high = values.get(f"avg@{k}_ci_low"), values.get(f"avg@{k}_ci_high")
        cells.insert(4, "-" if low is None or math.isnan(low) else f"{low:.3f}-{high:.3f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
