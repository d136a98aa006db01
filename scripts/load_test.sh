#!/usr/bin/env bash
# Load test of `cspn serve` on loopback with wrk: requests/s and p50/p99 latency at 1, 4 and 16
# concurrent clients, for the batching server (--max-batch 8) and the unbatched one (--max-batch 1),
# in the same run on the same photo. Each request asks for the best garment (max_garments=1,
# min_score=0), so every request costs one detector pass and one landmark crop.
#   scripts/load_test.sh [OUT_DIR] [MODEL] [PHOTO]
# MODEL defaults to configs/robot.yaml's network with untrained weights (speed only), PHOTO to a
# photo of ../shared/data (else a synthetic scene). DURATION (seconds per point, default 20) and
# BUILD_DIR (default build) from the environment. Writes OUT_DIR/load.json and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-load-test}
model=${2:-}
photo=${3:-}
build=${BUILD_DIR:-build}
duration=${DURATION:-20}
cspn="$build/cspn"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
mkdir -p "$out"

if [ -z "$model" ]; then
  model="$out/speed-model/model.cspn"
  if [ ! -f "$model" ]; then
    echo "making a model of configs/robot.yaml's network (2 training steps: speed only)"
    "$cspn" synth --out "$out/scenes" --scenes --count 24 --seed 3 --width 320 --height 240 >/dev/null
    "$cspn" train --config configs/robot.yaml --data "$out/scenes" --out "$out/speed-model" --quiet \
      --set train.iters=2 --set train_detector.iters=2 --set train.warmup_iters=1 --set train_detector.warmup_iters=1 >/dev/null
  fi
fi
if [ -z "$photo" ]; then
  photo=$(ls ../shared/data/ziegler_robot_landmarks/*.jpg 2>/dev/null | head -1 || true)
  [ -n "$photo" ] || photo=$(ls "$out"/scenes/img/*.jpg | head -1)
fi

cat >"$out/post.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/landmarks?min_score=0&max_garments=1"
wrk.headers["Content-Type"] = "image/jpeg"
local f = assert(io.open("$photo", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.2f %.2f %.3f\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests / (summary.duration / 1e6)))
end
EOF

echo "model $model, photo $photo, $duration s per point"
printf '%-10s %8s %12s %10s %10s %8s\n' "max-batch" "clients" "requests/s" "p50 ms" "p99 ms" "errors"
rows=()
for batch in 8 1; do
  log="$out/serve-batch$batch.log"
  "$cspn" serve --model "$model" --port 0 --threads 32 --max-batch "$batch" 2>"$log" &
  server=$!
  port=""
  for _ in $(seq 300); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://' || true)
    [ -n "$port" ] && break
    sleep 0.2
  done
  [ -n "$port" ] || { echo "server did not start: $(cat "$log")" >&2; kill "$server"; exit 1; }
  for clients in 1 4 16; do
    threads=$((clients < 2 ? 1 : 2))
    read -r requests errors p50 p99 rps < <(wrk -t"$threads" -c"$clients" -d"${duration}s" --timeout 30s \
      -s "$out/post.lua" "http://127.0.0.1:$port" | grep '^RESULT' | cut -d' ' -f2-)
    printf '%-10s %8s %12s %10s %10s %8s\n' "$batch" "$clients" "$rps" "$p50" "$p99" "$errors"
    rows+=("{\"max_batch\": $batch, \"clients\": $clients, \"requests\": $requests, \"errors\": $errors, \"requests_per_s\": $rps, \"p50_ms\": $p50, \"p99_ms\": $p99}")
  done
  kill -TERM "$server"
  wait "$server"
done
(IFS=,; echo "{\"model\": \"$model\", \"photo\": \"$photo\", \"duration_s\": $duration, \"rows\": [${rows[*]}]}") >"$out/load.json"
echo "wrote $out/load.json"
