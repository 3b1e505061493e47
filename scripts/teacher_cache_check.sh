#!/usr/bin/env bash
# Does training from a teacher cache give the model that uncached SEED training gives? On the quickstart's world
# (run `make quickstart` first), for 3 seeds: SEED with the teacher forward vs SEED from a top-64 cache written by
# `seedvlm teach` with the same seed; POPE (3 splits) + CHAIR on the quickstart's held-out images; one report.
#   bash scripts/teacher_cache_check.sh [QS=runs/quickstart] [OUT=runs/cache_check]     BASE=... as in quickstart
set -euo pipefail
QS=${1:-runs/quickstart}
OUT=${2:-runs/cache_check}
BASE=${BASE:-assets/base-tiny}
SEEDS=${SEEDS:-"0 1 2"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -f "$QS/train.json" ] && [ -d "$QS/pope" ] || { echo "error: $QS has no train.json / pope: run make quickstart first" >&2; exit 2; }
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }
train=(--config configs/seed_tiny.yaml --model "$BASE" --data "$QS/train.json" --images "$QS/world/images/train")
runs=()
for s in $SEEDS; do
  step "seed $s: teacher cache (top-64)"
  seedvlm teach "${train[@]}" --seed "$s" --out "$OUT/cache_s$s" --top-k 64
  for arm in uncached cached; do
    extra=(); [ "$arm" = cached ] && extra=(--teacher-cache "$OUT/cache_s$s")
    step "seed $s: train SEED ($arm)"
    seedvlm train "${train[@]}" --seed "$s" "${extra[@]}" --output-dir "$OUT/${arm}_s$s" --overwrite-output-dir true
    step "seed $s: evaluate $arm"
    run=(--model "$BASE" --adapter "$OUT/${arm}_s$s/adapter" --train-manifest "$OUT/${arm}_s$s/train_manifest.json")
    seedvlm eval pope "${run[@]}" --questions "$QS/pope" --images "$QS/world/images/val" --batch-size 32 \
      --out "$OUT/eval/${arm}_s$s/pope"
    seedvlm eval chair "${run[@]}" --instances "$QS/world/instances_val.json" --references "$QS/world/captions_val.json" \
      --images "$QS/world/images/val" --n 100 --max-new-tokens 128 --batch-size 32 --out "$OUT/eval/${arm}_s$s/chair"
    runs+=(--run "${arm}_s$s=$OUT/eval/${arm}_s$s")
  done
done
step "compare"
seedvlm compare --run base="$QS/eval/base" "${runs[@]}" --out "$OUT/report"
echo "finished in $(( $(date +%s) - t0 ))s; report: $OUT/report/report.md"
