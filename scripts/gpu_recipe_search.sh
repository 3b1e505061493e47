#!/usr/bin/env bash
# The tiny-base recipe search on one lent GPU, in one call: stages 0-1 once per vision recipe (plain, degraded
# views), then, as soon as its vision build is done, stages 2-3 + the seven readiness checks for every
# language-stage lever on it, all variants side by side.
# Usage (device, repo root): bash scripts/gpu_recipe_search.sh OUTDIR DEADLINE_S
#   VISION="P: D:--vision-degrade=0.3"   name:args of the stage 0-1 builds (save fp32, no stages 2-3)
#   LEVERS="r0:P: r2:P:--uninformative=0.2 ..."   name:vision-build:args of the stage 2-3 builds (--init that build)
#   INIT_P=path / INIT_D=path            skip a stage 0-1 build: continue from this fp32 checkpoint instead
#   HALLUCINATION=0.35                   the world's --hallucination-rate (share of training descriptions that name
#                                        one absent partner); every build of the call uses that world
# Options inside a spec are written --key=value, several joined by commas (specs are split on spaces); a list value
# keeps its own commas: --noisy-alpha=0.2,0.4.
# What comes back (at most 8 files): results.tar (every variant's pretrain.json, log, no weights), the best
# variants' folders (by readiness: checks passed, then check 7's margin), and, when a stage 2-3 build did not finish
# before DEADLINE_S, the stage 0-1 checkpoints split into 15 MB parts so that a second call can continue.
set -uo pipefail
out=$1; deadline=${2:-580}; start=$SECONDS
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out" /tmp/rs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
W=/tmp/rs/world
python3 -m seedvlm world --out $W --train 6000 --val 500 --size 64 --seed 0 --hallucination-rate "${HALLUCINATION:-0.35}" \
  --hard-negatives 0.1 --quiet > /tmp/rs/world.log 2>&1 || { cat /tmp/rs/world.log; exit 1; }
# one job per vision build: build it (or link the given checkpoint), then start its stage 2-3 variants at once
pids=()
for spec in ${VISION:-P:}; do
  IFS=: read -r vname vextra <<<"$spec"; vextra=${vextra//,--/ --}
  (
    init_var=INIT_$vname
    if [ -n "${!init_var:-}" ]; then
      ln -sfn "$(realpath "${!init_var}")" /tmp/rs/v_$vname
    else
      python3 -m seedvlm pretrain --world $W --preset tiny --out /tmp/rs/v_$vname --align-epochs 0 --instruct-epochs 0 \
        --readiness-images 0 --save-dtype float32 --threads 4 $vextra > /tmp/rs/v_$vname.log 2>&1
      echo "exit $?" >> /tmp/rs/v_$vname.log
      echo "stage 0-1 build $vname done at $((SECONDS - start)) s"
    fi
    left=$((deadline - (SECONDS - start)))
    lp=()
    for lspec in ${LEVERS:-}; do
      IFS=: read -r name v extra <<<"$lspec"; extra=${extra//,--/ --}
      [ "$v" = "$vname" ] || continue
      ( timeout "$left" python3 -m seedvlm pretrain --world $W --init /tmp/rs/v_$v --out /tmp/rs/$name --text-steps 0 \
          --vision-steps 0 --readiness-images 300 --threads 2 $extra > /tmp/rs/$name.log 2>&1
        echo "exit $?" >> /tmp/rs/$name.log; echo "variant $name done at $((SECONDS - start)) s" ) &
      lp+=($!)
    done
    for p in "${lp[@]}"; do wait "$p"; done
  ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "all builds done at $((SECONDS - start)) s"
mkdir -p /tmp/rs/results
cp /tmp/rs/*.log $W/world.json /tmp/rs/results/ 2>/dev/null
for spec in ${LEVERS:-}; do n=${spec%%:*}; [ -f /tmp/rs/$n/pretrain.json ] && cp /tmp/rs/$n/pretrain.json /tmp/rs/results/$n.pretrain.json; done
tar -C /tmp/rs -cf "$out/results.tar" results
unfinished=0
for spec in ${LEVERS:-}; do n=${spec%%:*}; [ -f /tmp/rs/$n/pretrain.json ] || unfinished=1; done
keep=3
if [ $unfinished = 1 ]; then
  keep=1
  for spec in ${VISION:-P:}; do n=${spec%%:*}
    [ -d /tmp/rs/v_$n ] && [ ! -L /tmp/rs/v_$n ] && tar -C /tmp/rs -cf - v_$n | split -b 15M -d - "$out/v_$n.tar.part"
  done
fi
python3 - "$keep" ${LEVERS:-} <<'PY' | while read -r n; do tar -C /tmp/rs -cf "$out/$n.tar" "$n"; done
import json, sys
keep, names = int(sys.argv[1]), [s.split(":")[0] for s in sys.argv[2:]]
rows = []
for n in names:
    try:
        r = json.load(open(f"/tmp/rs/{n}/pretrain.json"))["readiness"]
    except (OSError, KeyError):
        continue
    prior = r["prior_under_noise"]
    margin = min(prior["partner_change"], -prior["present_change"])
    rows.append((sum(bool(c["passed"]) for c in r["checks"].values()), margin, n))
for *_, n in sorted(rows, reverse=True)[:keep]:
    print(n)
PY
ls -la "$out"
for spec in ${LEVERS:-}; do n=${spec%%:*}; echo "=== $n"; grep -E "^\||READY|exit|rror" /tmp/rs/$n.log | grep -v "it/s\]" | head -40; done
