#!/usr/bin/env bash
# The whole seedvlm story on the embedded world, on a CPU, offline: a fresh world -> the shipped tiny base and its
# readiness -> SEED and plain LoRA SFT fine-tuning from it -> POPE (3 splits) + CHAIR for base, SFT and SEED ->
# the comparison table. Run through `make quickstart` (which creates the venv first).
#   bash scripts/quickstart.sh [OUT=runs/quickstart]     BASE=path/to/base overrides the shipped base
set -euo pipefail
QS=${1:-runs/quickstart}
BASE=${BASE:-assets/base-tiny}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$QS"
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }

# A world the base never saw (seed 1; the base was pretrained on seed 0's train split).
step "world: 400 train + 150 val images"
seedvlm world --out "$QS/world" --train 400 --val 150 --seed 1 --quiet

step "base model $BASE: readiness on 100 val images (does it see? does it still hallucinate?)"
seedvlm readiness --model "$BASE" --world "$QS/world" --n 100 --out "$QS/readiness.json"

step "prepare training records"
seedvlm prepare --input "$QS/world/instruct_train.json" --images "$QS/world/images/train" --out "$QS/train.json" \
    --turns each  # one example per turn, as the documented quickstart tables were made

for method in seed sft; do
  step "train: LoRA $method (configs/${method}_tiny.yaml)"
  seedvlm train --config "configs/${method}_tiny.yaml" --model "$BASE" --data "$QS/train.json" \
    --images "$QS/world/images/train" --output-dir "$QS/$method" --overwrite-output-dir true
done

step "POPE questions: random / popular / adversarial on 50 held-out images"
seedvlm pope build --instances "$QS/world/instances_val.json" --out "$QS/pope" --n-images 50 --seed 0

for run in base sft seed; do
  adapter=(); guard=()
  if [ "$run" != base ]; then
    adapter=(--adapter "$QS/$run/adapter"); guard=(--train-manifest "$QS/$run/train_manifest.json")
  fi
  step "evaluate $run: POPE + CHAIR"
  seedvlm eval pope --model "$BASE" "${adapter[@]}" "${guard[@]}" --questions "$QS/pope" \
    --images "$QS/world/images/val" --batch-size 32 --out "$QS/eval/$run/pope"
  seedvlm eval chair --model "$BASE" "${adapter[@]}" "${guard[@]}" --instances "$QS/world/instances_val.json" \
    --references "$QS/world/captions_val.json" --images "$QS/world/images/val" --n 100 --max-new-tokens 128 \
    --batch-size 32 --out "$QS/eval/$run/chair"
done

step "compare"
seedvlm compare --run base="$QS/eval/base" --run sft="$QS/eval/sft" --run seed="$QS/eval/seed" --out "$QS/report"
echo
echo "quickstart finished in $(( $(date +%s) - t0 ))s; report: $QS/report/report.md"
