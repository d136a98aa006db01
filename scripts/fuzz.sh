#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/*.cpp: CSV, FashionAI, COCO and FLD readers, image checks and
# decoding, model files, YAML config, landmark schema files) with clang, libFuzzer, ASan and UBSan into build-fuzz/, and runs each for
# SECONDS (default 30). Seeds: fuzz/seeds/<target> plus, when ../shared/data is there, its real
# files. Crashes are written to build-fuzz/findings/<target>/ and fail the script.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (targets: csv coco fld image model_file config schema)
# Environment: JOBS (parallel runs and build jobs, default 2), BUILD_DIR (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(csv coco fld image model_file config schema)
build=${BUILD_DIR:-build-fuzz}
jobs=${JOBS:-2}
shared=../shared/data

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCSPN_FUZZ=ON >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}"

# Seeds: ours, and the real files of ../shared/data (copied into the run's corpus, not the repo).
seed() {  # seed TARGET FILE...
  local dir="$build/corpus/$1"
  shift
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "$dir/" 2>/dev/null || true; done
}
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/findings/$t"
  cp -n fuzz/seeds/"$t"/* "$build/corpus/$t/" 2>/dev/null || true
done
seed schema schemas/*.yaml
if [ -d "$shared" ]; then
  seed csv "$shared"/ziegler_robot_landmarks/info.csv "$shared"/fashionai_keypoints/*.csv
  seed coco "$shared"/mmpose_fld/*.json "$shared"/mmpose_deepfashion2/*.json
  seed image "$shared"/ziegler_robot_landmarks/2019-06-06-150617.jpg "$shared"/mmpose_fld/*.jpg
  for f in "$shared"/fld_dfa_demo_unannotated/*/Anno/list_landmarks.txt; do
    [ -f "$f" ] || continue
    # FLD inputs are three files joined by NUL bytes: landmarks, boxes, partition.
    root=$(dirname "$(dirname "$f")")
    { head -c 4000 "$f"; printf '\0'; head -c 2000 "$root/Anno/list_bbox.txt" 2>/dev/null || true; printf '\0';
      head -c 2000 "$root/Eval/list_eval_partition.txt" 2>/dev/null || true; } >"$build/corpus/fld/$(basename "$root").txt"
  done
fi

export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
run() {  # run TARGET: prints "TARGET runs crashes"
  local t=$1 log="$build/findings/$1/log.txt"
  if "$build/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
      -artifact_prefix="$build/findings/$t/" "$build/corpus/$t" >"$log" 2>&1; then :; fi
  local runs crashes
  runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo 0)
  crashes=$(find "$build/findings/$t" -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l)
  printf '%-12s %10s runs in %ss, %s findings\n' "$t" "${runs:-0}" "$seconds" "$crashes"
  [ "$crashes" -eq 0 ] || { tail -40 "$log"; return 1; }
}
pids=()
for t in "${targets[@]}"; do
  run "$t" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
