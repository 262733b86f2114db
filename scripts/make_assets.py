"""Regenerate ``assets/``: the tiny character-level tokenizer, the tiny Qwen2 config and the arithmetic data.

Everything is built offline and deterministically, so running this twice gives byte-identical files::

    python scripts/make_assets.py            # writes assets/ next to this script's parent folder
    python scripts/make_assets.py --out DIR  # somewhere else

What it writes:

- ``assets/tiny-qwen2/``: ``config.json`` of a 0.8M-parameter Qwen2 (hidden 128, 4 layers, 4 heads / 2 KV heads,
  head dim 32, tied embeddings) and the tokenizer files. No weights: load it with
  ``load_causal_lm(path, from_scratch=True)``, or warm it up with ``scripts/prepare_demo_model.py``.
- ``assets/arithmetic/train.jsonl`` and ``val.jsonl``: ``{"prompt": "123+456=", "answer": "579"}`` lines, 3-digit
  additions and 2-digit x 1-digit products; the two files share no prompt.

The tokenizer maps every printable ASCII character and the newline to one token, plus ``<pad>`` (id 0),
``<|endoftext|>`` (id 1, EOS) and ``<unk>`` (id 2); it adds no special tokens on encode (a prompt is its raw text,
a response is the answer followed by EOS) and ``decode(encode(s)) == s``. Tokens are stored in the byte-level
alphabet of GPT-2 style tokenizers (space is ``Ġ``, newline ``Ċ``) behind a ``ByteLevel`` decoder. The reason:
``AutoTokenizer`` loads any ``qwen2`` checkpoint as ``Qwen2Tokenizer``, which rebuilds a byte-level BPE from the
stored vocabulary; with byte-level tokens and no merges, that rebuild splits text into exactly the same single
characters and ids (checked in ``tests/test_models.py``), so ``AutoTokenizer``, vLLM and this file agree.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config

PAD, EOS, UNK = "<pad>", "<|endoftext|>", "<unk>"
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # printable ASCII and "\n"
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
SEED = 1234
N_TRAIN_ADD, N_VAL_ADD, N_VAL_MUL = 3000, 100, 100


def _byte_level_chars() -> dict[int, str]:
    """The byte-level alphabet of GPT-2 style tokenizers: byte -> a printable unicode character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer: one token per character, ``<pad>`` = 0, EOS = 1, ``<unk>`` = 2."""
    byte_char = _byte_level_chars()
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *(byte_char[ord(c)] for c in CHARS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=256,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The tiny Qwen2: hidden 128, 4 layers, 4 query / 2 key-value heads (head dim 32), MLP 384, tied embeddings."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def arithmetic_splits(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Disjoint train / val problems: 3-digit additions and all 2-digit x 1-digit (2..9) products.

    The 720 products are shuffled; ``N_VAL_MUL`` go to val, the rest to train. Additions are drawn without
    repetition: ``N_VAL_ADD`` to val and ``N_TRAIN_ADD`` to train. Each split is shuffled.
    """
    rng = random.Random(seed)
    products = [(a, b) for a in range(10, 100) for b in range(2, 10)]
    rng.shuffle(products)
    mul = [{"prompt": f"{a}*{b}=", "answer": str(a * b)} for a, b in products]
    seen: set[tuple[int, int]] = set()
    add: list[dict[str, str]] = []
    while len(add) < N_TRAIN_ADD + N_VAL_ADD:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        if (a, b) not in seen:
            seen.add((a, b))
            add.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    train = add[N_VAL_ADD:] + mul[N_VAL_MUL:]
    val = add[:N_VAL_ADD] + mul[:N_VAL_MUL]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """One JSON object per line, keys in a fixed order."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets")
    args = parser.parse_args()

    model_dir = args.out / "tiny-qwen2"
    data_dir = args.out / "arithmetic"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(model_dir)
    build_config(tokenizer).save_pretrained(model_dir)

    train, val = arithmetic_splits()
    write_jsonl(data_dir / "train.jsonl", train)
    write_jsonl(data_dir / "val.jsonl", val)
    print(f"wrote {model_dir} (vocab {len(tokenizer)}), {len(train)} train and {len(val)} val problems")


if __name__ == "__main__":
    main()
