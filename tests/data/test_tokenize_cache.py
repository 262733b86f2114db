"""Prompt tokenization: each distinct text once, in batches, equal to calling the tokenizer text by text; the disk
cache of large sets is read back without tokenizing, keyed so that a change of text or tokenizer is a new entry."""

from __future__ import annotations

import numpy as np
import pytest
from tests_data_helpers import CHAT_TEMPLATE, build_char_tokenizer

from rlvr_lightning.data.prompts import PromptFormat, PromptRecord, format_prompts
from rlvr_lightning.data.tokenize import tokenize_texts, tokenizer_fingerprint


class CountingTokenizer:
    """Wraps a tokenizer and counts the texts it is asked to encode."""

    def __init__(self, tok):
        self.tok, self.texts = tok, 0
        self.backend_tokenizer = tok.backend_tokenizer

    def __call__(self, texts, **kw):
        self.texts += len(texts) if isinstance(texts, list) else 1
        return self.tok(texts, **kw)


TEXTS = ["1+2=", "hello world", "1+2=", "", "a" * 40, "hello world"] + [f"q{i}?" for i in range(2500)]


@pytest.mark.parametrize("special", [True, False])
def test_ids_equal_the_tokenizer_text_by_text_and_each_distinct_text_is_encoded_once(special):
    tok = CountingTokenizer(build_char_tokenizer())
    ids = tokenize_texts(TEXTS, tok, add_special_tokens=special)
    assert ids == [tok.tok(t, add_special_tokens=special)["input_ids"] for t in TEXTS]
    assert tok.texts == len(set(TEXTS))


def test_cache_is_read_back_without_tokenizing_and_is_keyed_by_text_and_tokenizer(tmp_path):
    tok = CountingTokenizer(build_char_tokenizer())
    first = tokenize_texts(TEXTS, tok, cache_dir=str(tmp_path), min_cached=100)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and tok.texts == len(set(TEXTS))
    again = tokenize_texts(TEXTS, tok, cache_dir=str(tmp_path), min_cached=100)
    assert again == first and tok.texts == len(set(TEXTS))  # nothing tokenized the second time
    tokenize_texts(TEXTS[:-1] + ["changed"], tok, cache_dir=str(tmp_path), min_cached=100)
    other = build_char_tokenizer(chat_template=CHAT_TEMPLATE)
    other.add_tokens(["<extra>"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok.tok)
    tokenize_texts(TEXTS, other, cache_dir=str(tmp_path), min_cached=100)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    with np.load(files[0]) as data:  # what the file holds: every distinct text's ids, in order
        assert int(data["lengths"].sum()) == len(data["ids"]) == sum(len(x) for x in dict.fromkeys(map(tuple, first)))


def test_small_sets_and_cut_short_files_are_not_trusted(tmp_path):
    tok = CountingTokenizer(build_char_tokenizer())
    tokenize_texts(TEXTS[:6], tok, cache_dir=str(tmp_path))  # fewer than CACHE_MIN_PROMPTS distinct texts
    assert not list(tmp_path.glob("*.npz"))
    tokenize_texts(TEXTS, tok, cache_dir=str(tmp_path), min_cached=1)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    before = tok.texts
    assert tokenize_texts(TEXTS, tok, cache_dir=str(tmp_path), min_cached=1)[1] == tok.tok(TEXTS[1])["input_ids"]
    assert tok.texts == before + len(set(TEXTS))


def test_format_prompts_is_unchanged_by_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("rlvr_lightning.data.tokenize.CACHE_MIN_PROMPTS", 10)
    tok = build_char_tokenizer(chat_template=CHAT_TEMPLATE)
    recs = lambda: [PromptRecord(prompt=f"{i}+{i}=", answer=str(2 * i), where=f"row {i}") for i in range(50)]
    fmt = PromptFormat(prompt_template="Q: {prompt}", max_prompt_length=24)  # "<user>Q: 9+9=<assistant>": 24 chars
    plain, dropped = format_prompts(recs(), tok, fmt)
    assert not list(tmp_path.iterdir())
    for _ in range(2):  # written, then read back
        cached, dropped_cached = format_prompts(recs(), tok, fmt, cache_dir=str(tmp_path))
        assert [(r.text, r.token_ids) for r in plain] == [(r.text, r.token_ids) for r in cached]
        assert dropped == dropped_cached == 40 and len(list(tmp_path.glob("*.npz"))) == 1
    assert plain[0].token_ids == tok(plain[0].text, add_special_tokens=False)["input_ids"]
