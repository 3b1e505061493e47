#!/usr/bin/env bash
# Run `seedvlm experiment` with one process per seed (same results as one process, in about the time of the slowest
# seed): first the shared steps (world, data, questions) and the base evaluation in one process, then every seed in
# its own process (on the GPUs of $GPUS in turn), then one more pass over all seeds that finds every training and
# evaluation step done and writes the summary. Cost beside one process: each later seed's process evaluates the
# (seed-independent) greedy base once more, as it is the first seed there; the last pass replaces those results
# with copies of the first seed's. Ablations run in the first ABLATION_SEEDS (default 1, the configs' ablation_seeds)
# seeds only: the processes of later seeds get --ablation-seeds 0 (each process would count its seed as a first one).
# Usage:
#   bash scripts/experiment_parallel.sh CONFIG [--key value ...]          e.g. configs/experiment_world.yaml --out runs/x
# Environment: SEEDS (default "0 1 2"); GPUS, the GPU ids the seeds go to in turn (default: all that nvidia-smi
# lists; none: the CPU); LIMIT (seconds per phase, default none: an interrupted run resumes when run again);
# LOGDIR (default /tmp) for the per-seed logs. Ctrl-C (or a kill of the script's process group) stops every process.
set -uo pipefail
cfg=$1; shift
seeds=${SEEDS:-0 1 2}
gpus=(${GPUS-$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)})
# --foreground keeps every process in the script's process group, so Ctrl-C or a kill of the group stops the seeds'
# processes too (plain timeout moves each into a group of its own, where they outlive the script)
run() { timeout --foreground "${LIMIT:-100000}" python3 -m seedvlm experiment --config "$cfg" "$@"; }
first=${seeds%% *}
all=$(echo $seeds | tr ' ' ',')
CUDA_VISIBLE_DEVICES=${gpus[0]:-} run "$@" --seeds "$first" --arms base --w-sweep "[]" --ablations "{}" || exit $?
i=0; pids=()
for s in $seeds; do
  dev=""; [ ${#gpus[@]} -gt 0 ] && dev=${gpus[$((i % ${#gpus[@]}))]}
  abl=(); [ $i -ge "${ABLATION_SEEDS:-1}" ] && abl=(--ablation-seeds 0)
  CUDA_VISIBLE_DEVICES=$dev run "$@" --seeds "$s" "${abl[@]}" >"${LOGDIR:-/tmp}/experiment_seed$s.log" 2>&1 &
  pids+=($!); i=$((i + 1))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
[ $rc -eq 0 ] || { echo "a seed's process failed (rc $rc): see ${LOGDIR:-/tmp}/experiment_seed*.log" >&2; exit $rc; }
run "$@" --seeds "$all"
