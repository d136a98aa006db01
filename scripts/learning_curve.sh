#!/usr/bin/env bash
# Few labels, with and without the photos nobody labelled: configs/robot.yaml trained on k labelled
# robot photos of a fixed training pool (52 of the 78 shared), alone and with the rest of the pool
# as --unlabelled, each scored with true boxes on the same 26 held-out photos (scripts/
# learning_curve.py split says how they are chosen). A run with --unlabelled also writes
# teacher.cspn, the model of its labelled photos alone before the unlabelled rounds: that is the
# "labelled alone" figure, so each k costs one run (about 25 minutes on 2 cores; budgets in
# iterations). Also the mean shape of the pool and, with SYNTHETIC_MODEL=file, a model trained
# without real labels. Writes OUT/learning_curve.md and OUT/learning_curve.png.
#   scripts/learning_curve.sh OUT [K...]     (K default: 5 10 20 40 all; DATA, CONFIG, CSPN, SETS)
# Finished runs are kept: a rerun only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/learning_curve.sh OUT [K...]}
shift
ks=("${@:-5 10 20 40 all}")
read -r -a ks <<< "${ks[*]}"
data=${DATA:-../shared/data/ziegler_robot_landmarks}
config=${CONFIG:-configs/robot.yaml}
cspn=${CSPN:-build/cspn}
export OMP_WAIT_POLICY=PASSIVE
py=/usr/bin/python3
mkdir -p "$out"
$py scripts/learning_curve.py split --data "$data" --out "$out/splits" --k "${ks[@]}"
score() {  # model json
  [ -f "$2" ] || "$cspn" eval --model "$1" --data "$out/splits/test" --format csv --split all --boxes gt --quiet \
    --json "$2" > "${2%.json}.txt"
}
for k in "${ks[@]}"; do
  run="$out/k$k"
  unlabelled=()
  [ -d "$out/splits/k$k/unlabelled" ] && unlabelled=(--unlabelled "$out/splits/k$k/unlabelled")
  if [ ! -f "$run/model.cspn" ]; then
    resume=()
    [ -f "$run/config.yaml" ] && resume=(--resume)
    # shellcheck disable=SC2086
    "$cspn" train --config "$config" --data "$out/splits/k$k/labelled" --format csv --out "$run" --quiet \
      "${unlabelled[@]}" "${resume[@]}" ${SETS:-}
  fi
  score "$run/model.cspn" "$run/test.json"
  [ -f "$run/teacher.cspn" ] && score "$run/teacher.cspn" "$run/teacher.json"
done
[ -f "$out/mean_shape.json" ] || "$cspn" eval --baseline mean-shape --train-data "$out/splits/kall/labelled" \
  --data "$out/splits/test" --format csv --split all --boxes gt --quiet --json "$out/mean_shape.json" > /dev/null
[ -z "${SYNTHETIC_MODEL:-}" ] || score "$SYNTHETIC_MODEL" "$out/synthetic.json"
$py scripts/learning_curve.py table --out "$out"
