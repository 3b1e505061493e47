#!/usr/bin/env bash
# Training-step and decoding speed of the other model families at their real sizes on one GPU (an H200: about 8
# minutes), random bf16 weights: train_step.py (LoRA SFT, SEED, SEED against a teacher cache; micro-batches 1 and 8;
# a case that runs out of memory is recorded as such) and decode_speed.py (greedy, and contrastive where the family
# contrastive decoding exists; batch 1 and 16) for Qwen2.5-VL-7B, llava-v1.6-vicuna-7b and SmolVLM-256M.
# Usage (device, repo root): bash scripts/gpu_family_speed.sh OUT   (needs transformers >= 5.25: carry .whl if older)
#   IMAGE_SIZE (448) the square image's side; PRESETS ("qwen2.5-vl-7b llava-v1.6-vicuna-7b smolvlm-256m");
#   MICRO_BATCHES ("1,8"), WARMUP (3) / STEPS (5) training steps, NEW_TOKENS (64) forced new tokens, REPEATS (3) timed decoding calls
#   (fewer for a smoke test).
# Writes OUT/train_<preset>.json, OUT/decode_<preset>.json and OUT/logs.txt (every run's stderr and exit status);
# a run that fails leaves its log and the others still run. Each run has a time budget (--time-budget) and a hard
# timeout, so the whole stays within about 8 minutes.
set -uo pipefail
out=${1:?usage: scripts/gpu_family_speed.sh OUT}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
size=${IMAGE_SIZE:-448}
log="$out/logs.txt"
# The project's transformers (5.25) where the machine's is older: from wheels carried in .whl, if there are any.
new_enough="import sys, transformers as t; sys.exit(tuple(map(int, t.__version__.split('.')[:2])) < (5, 25))"
if [ -d .whl ] && ! python3 -c "$new_enough" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$log" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, transformers as t, peft; print('torch', torch.__version__, 'transformers', t.__version__,
                                                           'peft', peft.__version__)"
} >>"$log" 2>&1

run() {  # run NAME LIMIT_S COMMAND...: the command's stderr and stdout into the log, its exit status after them
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" >>"$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  echo "=== $name: exit $? after $((SECONDS - t0)) s" >>"$log"
}

# seconds: hard limit of the process, then the budget of its timed rounds (from the model build on; warm-ups and one
# timed round always run). The default three presets' hard limits add up to 550 s, under one 600 s device call;
# the expected total is 5 to 7 minutes (contrastive decoding, once it exists, about doubles the decoding part).
declare -A TRAIN=([qwen2.5-vl-7b]="100 70" [llava-v1.6-vicuna-7b]="100 60" [smolvlm-256m]="70 45"
                  [smolvlm-500m]="70 45")
declare -A DECODE=([qwen2.5-vl-7b]="100 55" [llava-v1.6-vicuna-7b]="100 55" [smolvlm-256m]="80 45"
                  [smolvlm-500m]="80 45")
for preset in ${PRESETS:-qwen2.5-vl-7b llava-v1.6-vicuna-7b smolvlm-256m}; do
  read -r limit budget <<<"${TRAIN[$preset]:-150 60}"
  run "train $preset" "$limit" python3 benchmarks/train_step.py --preset "$preset" --device cuda --dtype bfloat16 \
    --micro-batches "${MICRO_BATCHES:-1,8}" --cases sft,seed,seed-cached --warmup "${WARMUP:-3}" --steps "${STEPS:-5}" \
    --image-size "$size" --time-budget "$budget" --out "$out/train_$preset.json"
  read -r limit budget <<<"${DECODE[$preset]:-120 60}"
  run "decode $preset" "$limit" python3 benchmarks/decode_speed.py --preset "$preset" --device cuda \
    --dtype bfloat16 --batch-sizes 1,16 --methods greedy,contrastive --new-tokens "${NEW_TOKENS:-64}" --warmup 1 \
    --repeats "${REPEATS:-3}" --time-budget "$budget" --image-size "$size" --out "$out/decode_$preset.json"
done
grep "^=== .*exit" "$log"
