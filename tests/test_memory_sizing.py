"""``scripts/memory_sizing.py``: its parameter counts equal a hand count of the Qwen2 architecture, its arithmetic the
formulas it states, and docs/scaling.md shows its output."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sizing = runpy.run_path(str(REPO / "scripts" / "memory_sizing.py"), run_name="memory_sizing")
DOC = (REPO / "docs" / "scaling.md").read_text()


def hand_count(a: dict) -> int:
    """Qwen2 parameters counted by hand: embeddings; per layer q/k/v projections with biases, o projection, the
    three MLP matrices, two RMSNorms; the final norm; an untied LM head."""
    h, i, V, L = a["hidden_size"], a["intermediate_size"], a["vocab_size"], a["num_hidden_layers"]
    kv = a["num_key_value_heads"] * h // a["num_attention_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return V * h + L * layer + h + (0 if a["tie_word_embeddings"] else V * h)


@pytest.mark.parametrize("name", sorted(sizing["ARCHS"]))
def test_parameter_counts_equal_a_hand_count(name):
    arch = sizing["ARCHS"][name]
    assert sizing["parameter_counts"](arch)["total"] == hand_count(arch)


def test_state_and_vllm_share_follow_the_formulas():
    run = sizing["Run"]("qwen2.5-math-7b", 8, 80, 8, 1024, 3072, 0.5)
    e = sizing["estimate"](run)
    n = hand_count(sizing["ARCHS"]["qwen2.5-math-7b"])
    assert e["state"] == pytest.approx(16 * n / 8 / 2**30)
    assert e["logits"] == pytest.approx(2 * 8 * 3072 * 152064 * 2 / 2**30)
    assert e["rollout"] == pytest.approx(e["state"] + 40.0)
    kv_tokens = (40 * 2**30 - 2 * n - 1.5 * 2**30) / (2 * 28 * 4 * 128 * 2)
    assert e["kv_seqs"] == pytest.approx(kv_tokens / 4096)


@pytest.mark.parametrize("args", [[], ["--model", "qwen2.5-math-7b", "--gpu-gib", "40", "--micro-batch", "2",
                                       "--utilization", "0.45"]])
def test_docs_show_the_scripts_output(args):
    out = subprocess.run([sys.executable, "scripts/memory_sizing.py", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    rows = out.strip().splitlines()[2:]
    assert rows and all(row in DOC for row in rows), out
