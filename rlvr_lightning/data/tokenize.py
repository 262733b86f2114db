"""Prompt tokenization: each distinct text once, in batches, and for large sets once per machine (a disk cache).

:func:`tokenize_texts` gives the token ids of many prompt texts. A text that occurs several times is tokenized once
(a set kept with its duplicates costs what its distinct prompts cost); the distinct texts go to the tokenizer in
batches (a fast tokenizer encodes a batch in one call into its Rust code). With ``cache_dir``, a set of at least
``min_cached`` distinct texts is stored there after its first tokenization, under a key made of the tokenizer
(its full definition, not its name), ``add_special_tokens`` and every text, so the next run, a resumed run and the
other ranks on the machine read it back instead of tokenizing again. A change to any of them is a new key, never a
stale entry. Smaller sets are not cached: they tokenize in seconds.

The ids are those of ``tokenizer(text, add_special_tokens=...)["input_ids"]`` called text by text.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CACHE_MIN_PROMPTS", "DEFAULT_CACHE_DIR", "tokenize_texts", "tokenizer_fingerprint"]

CACHE_MIN_PROMPTS = 10_000  # distinct prompt texts from which a set's token ids are cached on disk
DEFAULT_CACHE_DIR = "~/.cache/rlvr_lightning/tokens"
_BATCH = 1024


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hex digest of everything that decides ``tokenizer``'s ids: its class and its full definition (the
    ``tokenizer.json`` of a fast tokenizer; the vocabulary and special tokens otherwise)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
        h.update(repr(getattr(tokenizer, "special_tokens_map", {})).encode())
    return h.hexdigest()


def _cache_key(texts: Sequence[str], tokenizer: Any, add_special_tokens: bool) -> str:
    h = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{add_special_tokens}|{len(texts)}".encode())
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _encode(texts: Sequence[str], tokenizer: Any, add_special_tokens: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _BATCH):
        batch = list(texts[start:start + _BATCH])
        out.extend(list(ids) for ids in tokenizer(batch, add_special_tokens=add_special_tokens)["input_ids"])
    return out


def _read_cache(path: str) -> list[list[int]] | None:
    try:
        with np.load(path) as data:
            ids, lengths = data["ids"], data["lengths"]
    except Exception:  # noqa: BLE001 - absent, cut short or not ours: tokenize again (and rewrite it)
        return None
    return [a.tolist() for a in np.split(ids, np.cumsum(lengths)[:-1])] if len(lengths) else []


def _write_cache(path: str, encoded: list[list[int]]) -> None:
    """Write atomically (a temporary file renamed into place), so concurrent ranks never read half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lengths = np.array([len(x) for x in encoded], dtype=np.int64)
    ids = np.fromiter((t for x in encoded for t in x), dtype=np.int64, count=int(lengths.sum()))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=ids, lengths=lengths)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def tokenize_texts(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    add_special_tokens: bool = True,
    cache_dir: str | None = None,
    min_cached: int | None = None,
) -> list[list[int]]:
    """The token ids of each text (see the module docstring).

    Args:
        texts: prompt texts, duplicates allowed.
        tokenizer: a Hugging Face tokenizer.
        add_special_tokens: passed to the tokenizer (False for chat-templated text, which has them already).
        cache_dir: a folder for the disk cache (``~`` expanded); None: no cache.
        min_cached: the fewest distinct texts for which the cache is used (None: ``CACHE_MIN_PROMPTS``).

    Returns:
        One list of ids per text, in order.
    """
    distinct = list(dict.fromkeys(texts))
    path = None
    if cache_dir is not None and len(distinct) >= (CACHE_MIN_PROMPTS if min_cached is None else min_cached):
        path = os.path.join(os.path.expanduser(cache_dir), _cache_key(distinct, tokenizer, add_special_tokens) + ".npz")
    encoded = _read_cache(path) if path is not None else None
    if encoded is None or len(encoded) != len(distinct):
        encoded = _encode(distinct, tokenizer, add_special_tokens)
        if path is not None:
            _write_cache(path, encoded)
    lookup = dict(zip(distinct, encoded))
    return [lookup[t] for t in texts]
