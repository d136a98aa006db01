#!/usr/bin/env bash
# The paper's Table 3 on synthetic garments: CSPN with 1, 2, 3 and 4 stages, each trained for the
# same epochs from the same start (configs/synthetic.yaml at 64x64 crops, 1000 images: 800 train,
# 100 validation, 100 test), scored on the held-out images; each model's own stages too.
#   scripts/stage_ablation.sh OUT [EPOCHS]      (EPOCHS default 12; THREADS=n per training)
# Finished runs are kept: a rerun only does what is missing. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/stage_ablation.sh OUT [EPOCHS]}
epochs=${2:-12}
cspn=${CSPN:-build/cspn}
mkdir -p "$out"
[ -f "$out/data/Eval/list_eval_partition.txt" ] || "$cspn" synth --out "$out/data" --count 1000 --seed 2
for stages in 1 2 3 4; do
  run="$out/stages-$stages"
  if [ ! -f "$run/model.cspn" ]; then
    rm -rf "$run"
    "$cspn" train --config configs/synthetic.yaml --data "$out/data" --format fld --out "$run" --quiet \
      --set model.keypoints.stages="$stages" --set "model.keypoints.input_size=[64, 64]" \
      --set train.epochs="$epochs" --set train.iters=0 --set train.time_limit_minutes=0 --set train.val_every=2 \
      ${THREADS:+--set train.threads="$THREADS"}
  fi
  [ -f "$run/test.json" ] || "$cspn" eval --model "$run/model.cspn" --data "$out/data" --format fld --split test \
    --json "$run/test.json" > "$run/eval.txt"
  "$cspn" info --model "$run/model.cspn" > "$run/info.txt"
done
python3 scripts/eval_table.py --stages "$out"/stages-*/test.json
