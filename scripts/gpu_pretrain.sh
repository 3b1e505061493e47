#!/usr/bin/env bash
# Pretrain base models on the lent GPU machine, several variants in parallel on one GPU (each is small).
# Usage (on the device, from the repo root): bash scripts/gpu_pretrain.sh OUTDIR "name:preset:size:rate:extra-args[:world-args]" ...
# Each variant: generate a world (seed 0) at `size` px with hallucination rate `rate` (and `world-args`, e.g.
# "--hard-negatives 0.2"), pretrain `preset` on it with `extra-args`,
# and tar the model folder + logs into OUTDIR/<name>.tar. To spread variants over GPUs, run one invocation per GPU
# with CUDA_VISIBLE_DEVICES set; TRAIN (default 6000) sets the number of training images, LIMIT (seconds) stops a
# pretraining that runs too long (its log still comes back).
set -uo pipefail
out=$1; shift
mkdir -p "$out"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pids=()
for spec in "$@"; do
  IFS=: read -r name preset size rate extra wextra <<<"$spec"
  (
    w=/tmp/world_$name
    python3 -m seedvlm world --out "$w" --size "$size" --hallucination-rate "$rate" --train "${TRAIN:-6000}" --val 500 --quiet ${wextra:-} \
      >"/tmp/$name.log" 2>&1 &&
    timeout "${LIMIT:-100000}" python3 -m seedvlm pretrain --world "$w" --preset "$preset" --out "/tmp/model_$name" \
      --threads 4 --readiness-images 300 $extra >>"/tmp/$name.log" 2>&1
    echo "exit $?" >>"/tmp/$name.log"
    cp "/tmp/$name.log" "/tmp/model_$name/" 2>/dev/null
    cp "$w/world.json" "/tmp/model_$name/world.json" 2>/dev/null
    # weights over 15 MB (the small preset) stay behind: only the config, pretrain.json and the log come back
    big=$(find "/tmp/model_$name" -name '*.safetensors' -size +15M 2>/dev/null)
    tar -C /tmp -cf "$out/$name.tar" $([ -n "$big" ] && echo --exclude='*.safetensors') "model_$name" 2>/dev/null ||
      cp "/tmp/$name.log" "$out/$name.log"
  ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for spec in "$@"; do
  name=${spec%%:*}
  echo "=== $name"; grep -v -E "it/s\]|step/s\]|q/s\]|s/step\]" "/tmp/$name.log" | grep -E "stage|READY|\||saved|exit|Error|error|Elapsed" | head -60
done
