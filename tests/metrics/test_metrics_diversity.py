"""distinct-n, Self-BLEU, distinct answers and ResponseDiversity against hand counts and naive references."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from rlvr_lightning.functional import distinct_n, distinct_n_tokens, self_bleu
from rlvr_lightning.metrics import ResponseDiversity, answer_classes, num_distinct_answers
from rlvr_lightning.rewards import AnswerEquivalence
from rlvr_lightning.rewards.math_verify import classify_answers


def test_distinct_n_hand_counted():
    texts = ["the cat sat", "the cat  ran", "a dog"]
    # unigrams: the cat sat the cat ran a dog -> 8 in all, 6 distinct
    assert float(distinct_n(texts, n=1)) == pytest.approx(6 / 8, abs=1e-15)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) (a dog) -> 5 in all, 4 distinct
    assert float(distinct_n(texts, n=2)) == pytest.approx(4 / 5, abs=1e-15)
    # trigrams: (the cat sat) (the cat ran) -> 2 in all, 2 distinct; "a dog" has none
    assert float(distinct_n(texts, n=3)) == pytest.approx(1.0, abs=1e-15)
    assert float(distinct_n(["a b"], n=3)) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(texts, n=0)


def test_distinct_n_tokens_matches_loop():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (5, 12), generator=g)
    lens = torch.tensor([12, 0, 5, 9, 2])
    mask = torch.arange(12).expand(5, 12) < lens[:, None]
    for n in (1, 2, 3):
        grams = [tuple(ids[i, j : j + n].tolist()) for i in range(5) for j in range(int(lens[i]) - n + 1)]
        want = len(set(grams)) / len(grams)
        assert float(distinct_n_tokens(ids, mask, n=n)) == pytest.approx(want, abs=1e-15)
        words = [" ".join(f"w{t}" for t in ids[i, : int(lens[i])].tolist()) for i in range(5)]
        assert float(distinct_n(words, n=n)) == pytest.approx(want, abs=1e-15)


def reference_bleu(hyp: list[str], refs: list[list[str]], n_gram: int = 4) -> float:
    """Papineni et al. (2002) BLEU of one hypothesis: clipped precisions, closest-length brevity penalty."""
    log_p = 0.0
    for n in range(1, n_gram + 1):
        h = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        max_ref: Counter = Counter()
        for r in refs:
            for gram, cnt in Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1)).items():
                max_ref[gram] = max(max_ref[gram], cnt)
        clipped = sum(min(c, max_ref[gram]) for gram, c in h.items())
        if clipped == 0:
            return 0.0
        log_p += math.log(clipped / sum(h.values())) / n_gram
    r_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    bp = 1.0 if len(hyp) > r_len else math.exp(1 - r_len / len(hyp))
    return bp * math.exp(log_p)


def test_self_bleu_matches_reference_bleu():
    texts = [
        "the answer is four because two plus two is four",
        "two plus two is four so the answer is four",
        "we add two and two to get four so the answer is four",
        "the answer is four",
    ]
    words = [t.split() for t in texts]
    want = sum(reference_bleu(words[i], words[:i] + words[i + 1 :]) for i in range(4)) / 4
    assert float(self_bleu(texts)) == pytest.approx(want, abs=1e-6)
    assert float(self_bleu(["x y z w v", "x y z w v"])) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        self_bleu(["only one"])


def test_num_distinct_answers_uses_math_equivalence():
    texts = [
        "so the result is $\\boxed{\\frac{1}{2}}$",
        "I get $\\boxed{0.5}$",
        "final: $\\boxed{1/2}$",
        "the answer is $\\boxed{3}$",
        "I cannot solve this.",
    ]
    ids = answer_classes(texts)
    assert ids[:3].tolist() == [0, 0, 0] and int(ids[3]) == 1
    assert int(num_distinct_answers(texts)) == 2
    assert int(num_distinct_answers(["a", "b", "a"], equivalence="exact")) == 2
    with pytest.raises(ValueError, match="equivalence"):
        answer_classes(["1"], equivalence="fuzzy")


def test_num_distinct_answers_survives_verifier_errors(monkeypatch):
    import math_verify

    def broken(*args, **kwargs):
        raise RuntimeError("verifier failure")

    monkeypatch.setattr(math_verify, "verify", broken)
    # the checker that the worker process runs, called here where the verifier is broken
    assert max(classify_answers(["$\\boxed{1}$", "$\\boxed{1}$"])) + 1 == 2  # no match can be proven


def test_answer_classes_of_a_group_that_overruns_its_limit_are_minus_one():
    # 200 responses with 50 distinct answers: 1.6 s of parsing and pairwise checks in the worker against a limit
    # of 200 x 1e-6 s, so the group overruns however the two processes are scheduled
    texts = [f"$\\boxed{{{i % 50}}}$" for i in range(200)]
    checker = AnswerEquivalence(timeout=1e-6)
    try:
        assert checker(texts) == [-1] * 200
        assert checker.last_stats == {"timeouts": 1, "errors": 0}
    finally:
        checker.close()
    checker = AnswerEquivalence(timeout=30.0)
    try:
        assert checker(["$\\boxed{1}$", "$\\boxed{2}$", "$\\boxed{1}$"]) == [0, 1, 0]
        assert checker.last_stats == {"timeouts": 0, "errors": 0}
    finally:
        checker.close()


def test_response_diversity_matches_per_group_functional_and_accumulates():
    texts = [
        "a b c d e",
        "a b c d f",
        "a b c d e",
        "x y z",
        "x y w",
        "u v x y z",
        "p q r s t u",
    ]
    gid = torch.tensor([0, 0, 0, 5, 5, 5, 9])
    groups = [[0, 1, 2], [3, 4, 5], [6]]
    ids = torch.randint(0, 5, (7, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(7, 6, dtype=torch.bool)
    whole = ResponseDiversity(ngrams=(1, 2), answers=False)
    whole.update(texts, gid, ids, mask)
    parts = ResponseDiversity(ngrams=(1, 2), answers=False)
    parts.update(texts[:3], gid[:3], ids[:3], mask[:3])
    parts.update(texts[3:], gid[3:], ids[3:], mask[3:])
    a, b = whole.compute(), parts.compute()
    assert set(a) == {"distinct_1", "distinct_2", "distinct_tok_1", "distinct_tok_2", "self_bleu"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)
    for n in (1, 2):
        want = sum(float(distinct_n([texts[i] for i in g], n=n)) for g in groups) / 3
        assert float(a[f"distinct_{n}"]) == pytest.approx(want, abs=1e-12)
        want_tok = sum(float(distinct_n_tokens(ids[g], mask[g], n=n)) for g in groups) / 3
        assert float(a[f"distinct_tok_{n}"]) == pytest.approx(want_tok, abs=1e-12)
    want_bleu = (
        sum(float(self_bleu([texts[i] for i in g])) for g in groups[:2]) / 2
    )  # singleton group skipped
    assert float(a["self_bleu"]) == pytest.approx(want_bleu, abs=1e-12)


def test_response_diversity_counts_answers():
    m = ResponseDiversity(ngrams=(1,), self_bleu=False)
    m.update(["$\\boxed{2}$", "$\\boxed{2.0}$", "$\\boxed{3}$", "$\\boxed{7}$"], torch.tensor([0, 0, 0, 1]))
    assert float(m.compute()["distinct_answers"]) == pytest.approx((2 + 1) / 2)
