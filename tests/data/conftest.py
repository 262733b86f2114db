"""Shared tiny assets for the data tests: a character-level tokenizer, a random Qwen2 model, a reward pool."""

from __future__ import annotations

import json

import pytest
from tests_data_helpers import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return build_tiny_model(len(tokenizer))


@pytest.fixture(scope="session")
def math_reward():
    from rlvr_lightning.rewards import MathVerifyReward

    reward = MathVerifyReward(timeout=1.0)
    yield reward
    reward.close()


@pytest.fixture
def arithmetic_jsonl(tmp_path):
    """12 toy addition questions as JSONL."""
    path = tmp_path / "train.jsonl"
    with open(path, "w") as f:
        f.writelines(
            json.dumps({"prompt": f"{i}+{i + 1}=", "answer": str(2 * i + 1)}) + "\n" for i in range(12)
        )
    return str(path)
