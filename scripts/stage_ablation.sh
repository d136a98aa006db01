#!/usr/bin/env bash
# The paper's Table 3 on synthetic garments: CSPN with 1, 2, 3 and 4 stages, each trained for the
# same number of batches from the same start (configs/synthetic.yaml at 64x64 crops on 5000 images:
# 4000 train, 500 validation, 500 test; 2000 batches are 8 epochs, to a plateau), validated every
# epoch, scored on the held-out images; each model's own stages too.
#   scripts/stage_ablation.sh OUT [BATCHES]     (BATCHES default 2000; THREADS=n per training;
#                                                extra --set arguments in SETS, e.g. SETS="--set model.keypoints.refine_stride=4")
# Finished runs are kept: a rerun only does what is missing. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/stage_ablation.sh OUT [BATCHES]}
batches=${2:-2000}
cspn=${CSPN:-build/cspn}
mkdir -p "$out"
[ -f "$out/data/Eval/list_eval_partition.txt" ] || "$cspn" synth --out "$out/data" --count 5000 --seed 3
for stages in 1 2 3 4; do
  run="$out/stages-$stages"
  if [ ! -f "$run/model.cspn" ]; then
    rm -rf "$run"
    # shellcheck disable=SC2086
    "$cspn" train --config configs/synthetic.yaml --data "$out/data" --format fld --out "$run" --quiet \
      --set model.keypoints.stages="$stages" --set "model.keypoints.input_size=[64, 64]" --set model.keypoints.refine_stride=1 \
      --set train.iters="$batches" --set train.time_limit_minutes=0 --set train.val_every=1 \
      ${THREADS:+--set train.threads="$THREADS"} ${SETS:-}
  fi
  [ -f "$run/test.json" ] || "$cspn" eval --model "$run/model.cspn" --data "$out/data" --format fld --split test \
    --json "$run/test.json" > "$run/eval.txt"
  "$cspn" info --model "$run/model.cspn" > "$run/info.txt"
done
python3 scripts/eval_table.py --stages "$out"/stages-*/test.json
