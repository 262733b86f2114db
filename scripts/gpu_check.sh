#!/usr/bin/env bash
# GPU check of training: a bf16 FSDP2 fit of a ~0.1B-parameter Qwen2 (random init from a config, no download)
# through the HF rollout engine on one GPU, printing peak GPU memory and tokens/s. Needs torch, transformers and
# lightning (no vLLM, no network). About 3-5 minutes on one H100.
#   bash scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
ACCELERATOR=${ACCELERATOR:-gpu}   # ACCELERATOR=cpu SIZE=tiny: a quick dry run of this script without a GPU
SIZE=${SIZE:-full}
mkdir -p "$OUT/model"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
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
python -m rlvr_lightning.cli fit --config configs/smoke.yaml \
  --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 \
  --trainer.strategy rlvr_lightning.checkpoint.AtomicModelParallelStrategy \
  --trainer.strategy.data_parallel_size 1 --trainer.strategy.tensor_parallel_size 1 \
  --trainer.max_steps 8 --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name fit \
  --checkpoint.every_n_train_steps 1000 \
  --model.model "$OUT/model" --model.fsdp_param_dtype bfloat16 --model.gradient_checkpointing true \
  --model.micro_batch_size 16 \
  --data.prompts_per_step 32 --data.num_generations 8 --data.max_new_tokens 64 --data.engine rlvr_lightning.data.HFEngine --data.engine.batch_size 256 \
  --data.rewards rlvr_lightning.rewards.ExactMatchReward
python - "$OUT" <<'PY'
import csv, sys
from pathlib import Path
rows = [r for p in Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(p))]
last = rows[-1]
def col(k):
    vals = [float(r[k]) for r in rows if r.get(k) not in (None, "")]
    return vals
tps = col("throughput/tokens_per_s")[2:] or col("throughput/tokens_per_s")
mem = col("gpu/peak_memory_gib")
print(f"peak GPU memory: {max(mem):.2f} GiB" if mem else "peak GPU memory: n/a (no GPU)")
print(f"tokens/s (steps 3+): mean {sum(tps)/len(tps):.0f}")
for k in ("time/rollout", "time/old_logprobs", "time/update", "time/step"):
    v = col(k)[2:] or col(k)
    print(f"{k}: {sum(v)/len(v):.3f} s")
PY
