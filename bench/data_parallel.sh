#!/usr/bin/env bash
# Training throughput of one process against two data-parallel ranks (Gloo over loopback), one
# after the other on this machine, each process on THREADS intra-op threads (default 1), and the
# two ranks once more with synchronised batch norm. Prints examples/s over the steady iterations
# (the first WARMUP left out) and the ratios.
#   bench/data_parallel.sh [DATA] [ITERS]   DATA: an FLD-layout set (default: 1000 synthetic garments)
# Environment: CSPN (default build/cspn), CONFIG (default configs/synthetic.yaml), THREADS, WARMUP.
set -euo pipefail
cd "$(dirname "$0")/.."
cspn=${CSPN:-build/cspn}
config=${CONFIG:-configs/synthetic.yaml}
threads=${THREADS:-1}
warmup=${WARMUP:-5}
iters=${2:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=${1:-}
if [ -z "$data" ]; then
  data=$work/data
  "$cspn" synth --out "$data" --count 1000 --seed 1 >/dev/null
fi

# Examples per second between iteration WARMUP and the last one of a run's log.
rate() {
  python3 - "$1" "$warmup" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1] + "/log.jsonl")]
start = next(r for r in records if r["type"] == "start")
batch = start["batch_per_rank"] * start["world_size"]
train = [r for r in records if r["type"] == "train"]
first = next(r for r in train if r["iter"] >= int(sys.argv[2]))
print((train[-1]["iter"] - first["iter"]) * batch / (train[-1]["elapsed_s"] - first["elapsed_s"]))
EOF
}

run() {  # run NAME WORLD [--set ...]
  local name=$1 world=$2 port
  shift 2
  port=$((20000 + RANDOM % 20000))
  for ((r = 0; r < world; ++r)); do
    env RANK=$r WORLD_SIZE="$world" LOCAL_RANK=$r LOCAL_WORLD_SIZE="$world" MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$cspn" train --config "$config" --data "$data" --format fld --out "$work/$name" --quiet \
      --set train.iters="$iters" --set train.threads="$threads" --set train.val_every=0 --set train.log_every=1 "$@" \
      >"$work/$name.$r.log" 2>&1 &
  done
  wait
}

run one 1
run two 2
run two_sync 2 --set train.sync_bn=true
one=$(rate "$work/one") two=$(rate "$work/two") sync=$(rate "$work/two_sync")
python3 - "$one" "$two" "$sync" "$threads" <<'EOF'
import sys
one, two, sync, threads = map(float, sys.argv[1:])
print(f"| processes ({int(threads)} thread each) | examples/s | vs 1 process |")
print("|---|---|---|")
print(f"| 1 | {one:.1f} | 1.00 |")
print(f"| 2 (Gloo, loopback) | {two:.1f} | {two / one:.2f} |")
print(f"| 2, train.sync_bn | {sync:.1f} | {sync / one:.2f} |")
EOF
