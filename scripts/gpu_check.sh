#!/usr/bin/env bash
# GPU check, three parts, each printing peak GPU memory, tokens/s and where a step's time goes:
#  1. a bf16 FSDP2 fit of a ~0.1B-parameter Qwen2 (random init from a config, no download) through the HF rollout
#     engine on one GPU (needs torch, transformers and lightning only; about 3-5 minutes on one H100);
#  2. the one-GPU recipe, configs/one_gpu.yaml, for $STEPS steps (vLLM when it is installed, else the HF engine),
#     with its entropy / reward / lambda per step and their curves drawn into $OUT/one_gpu/curves.png;
#  3. one-step-off rollouts (data.rollout_ahead 1) of the smoke config generated in the pull, then in the
#     background (an HF engine's copy of the policy in a CUDA stream of its own), with the step-time ratio and the
#     largest difference of the two runs' final weights.
#   bash scripts/gpu_check.sh [OUT_DIR]
#   MODEL=/models/qwen2.5-0.5b-instruct DATA=/data/dapo-math-17k.parquet bash scripts/gpu_check.sh   # offline
#   PARTS=1 (or 2, 3, 13...) runs those parts only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
ACCELERATOR=${ACCELERATOR:-gpu}   # ACCELERATOR=cpu SIZE=tiny: a quick dry run of this script without a GPU
SIZE=${SIZE:-full}
PARTS=${PARTS:-123}
STEPS=${STEPS:-5}
mkdir -p "$OUT/model"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

summarize() {  # summarize RUN_DIR: figures of a run from its metrics.csv
python - "$1" <<'PY'
import csv, sys
from pathlib import Path
rows = [r for p in Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(p))]
def col(k):
    vals = [float(r[k]) for r in rows if r.get(k) not in (None, "")]
    return vals
tps = col("throughput/tokens_per_s")[2:] or col("throughput/tokens_per_s")
mem = col("gpu/peak_memory_gib")
print(f"peak GPU memory: {max(mem):.2f} GiB" if mem else "peak GPU memory: n/a (no GPU)")
print(f"tokens/s (steps 3+): mean {sum(tps)/len(tps):.0f}")
for k in ("time/rollout", "time/old_logprobs", "time/update", "time/weight_sync", "time/step"):
    v = col(k)[2:] or col(k)
    if v:
        print(f"{k}: {sum(v)/len(v):.3f} s")
PY
}

python - "$OUT/model" "$SIZE" <<'PY'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
cfg = json.loads(Path("assets/tiny-qwen2/config.json").read_text())
if sys.argv[2] == "full":
    cfg.update(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
               num_key_value_heads=4, max_position_embeddings=1024)
(out / "config.json").write_text(json.dumps(cfg, indent=2))
for f in Path("assets/tiny-qwen2").iterdir():
    if f.name != "config.json":
        shutil.copy(f, out / f.name)
PY

if [[ $PARTS == *1* ]]; then
echo "== 1. bf16 FSDP2 fit of a ~0.1B Qwen2, HF engine"
python -m rlvr_lightning.cli fit --config configs/smoke.yaml \
  --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 \
  --trainer.strategy rlvr_lightning.checkpoint.AtomicModelParallelStrategy \
  --trainer.strategy.data_parallel_size 1 --trainer.strategy.tensor_parallel_size 1 \
  --trainer.max_steps 8 --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name fit \
  --checkpoint.every_n_train_steps 1000 \
  --model.model "$OUT/model" --model.fsdp_param_dtype bfloat16 --model.gradient_checkpointing true \
  --model.micro_batch_size 16 --model.check_logprobs false \
  --data.prompts_per_step 32 --data.num_generations 8 --data.max_new_tokens 64 --data.engine rlvr_lightning.data.HFEngine --data.engine.batch_size 256 \
  --data.rewards rlvr_lightning.rewards.ExactMatchReward
summarize "$OUT/fit"
fi

if [[ $PARTS == *2* ]]; then
echo "== 2. configs/one_gpu.yaml for $STEPS steps"
args=(--trainer.max_steps "$STEPS" --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name one_gpu
      --checkpoint.every_n_train_steps 1000)
[[ -n ${MODEL:-} ]] && args+=(--model.model "$MODEL")
[[ -n ${DATA:-} ]] && args+=(--data.train_files "$DATA")
if [[ $SIZE == tiny ]]; then  # the dry run: the tiny model on the shipped grade-school problems, the HF engine
  args+=(--trainer.accelerator "$ACCELERATOR" --model.model "$OUT/model" --model.from_scratch true
         --data.train_files assets/grade_school/train.jsonl --data.prompt_field question --data.answer_field answer
         --data.prompts_per_step 4 --data.num_generations 4 --data.max_new_tokens 16 --data.engine hf)
elif ! python -c "import vllm" 2>/dev/null; then
  echo "vLLM is not installed: the one-GPU recipe runs with the HF engine (pip install -e \".[vllm]\" for vLLM)"
  args+=(--data.engine hf)
fi
python -m rlvr_lightning.cli fit --config configs/one_gpu.yaml "${args[@]}"
summarize "$OUT/one_gpu"
python - "$OUT/one_gpu" <<'PY'
import csv, sys
from pathlib import Path
rows = [r for p in Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(p))]
print("rollout_step  reward  entropy  lambda")
for r in rows:
    if r.get("train/entropy"):
        print(f"{r['rollout_step']:>12}  {float(r['train/reward_mean']):.3f}  {float(r['train/entropy']):.3f}"
              f"  {float(r.get('train/lambda') or 'nan'):.2f}")
PY
if python -c "import matplotlib" 2>/dev/null; then
  python -m rlvr_lightning.cli plot "$OUT/one_gpu" -o "$OUT/one_gpu/curves.png"
fi
fi

if [[ $PARTS == *3* ]]; then
echo "== 3. one-step-off rollouts in the pull and in the background (smoke config, HF engine)"
for mode in pull background; do
  extra=(); [[ $mode == background ]] && extra=(--data.background_rollouts true)
  python -m rlvr_lightning.cli fit --config configs/smoke.yaml --trainer.accelerator "$ACCELERATOR" \
    --trainer.max_steps "$STEPS" --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name "ahead_$mode" \
    --data.rollout_ahead 1 "${extra[@]}" --data.engine hf --data.rewards rlvr_lightning.rewards.ExactMatchReward
  echo "-- $mode"; summarize "$OUT/ahead_$mode"
done
python - "$OUT" <<'PY'
import csv, statistics, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
def step(name):  # the median step time after the first step
    v = [float(r["time/step"]) for p in (out / name).rglob("metrics.csv") for r in csv.DictReader(open(p))
         if r.get("time/step")]
    return statistics.median(v[1:] or v)
pull, background = step("ahead_pull"), step("ahead_background")
w = [torch.load(next((out / n).rglob("last.ckpt")), map_location="cpu", weights_only=True)["state_dict"]
     for n in ("ahead_pull", "ahead_background")]
diff = max(float((w[0][k].float() - w[1][k].float()).abs().max()) for k in w[0])
print(f"median step: in the pull {pull:.3f} s, in the background {background:.3f} s "
      f"({background / pull:.2f}x); largest final-weight difference {diff:.2e}")
PY
fi
