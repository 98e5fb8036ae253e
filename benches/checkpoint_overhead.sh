#!/usr/bin/env bash
# What checkpoints cost: the same job rendered by a coordinator and 2 workers (release build,
# loopback) with `--checkpoint-every 0` (off), `auto` (the default) and `1` (every step, the worst
# case), runs interleaved (off, auto, every, off, ...) so drift hits all alike. Prints each run's
# wall time, the mean per mode and the ratios to "off" (paste into benches/RESULTS.md with the
# date and machine).
# Usage: benches/checkpoint_overhead.sh [repeats] [steps] [size]   (defaults: 3, 200, 256x256)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
steps="${2:-200}"
size="${3:-256x256}"
width="${size%x*}"
height="${size#*x}"
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=$PWD/target/release/longshot
work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# One cluster per mode (the interval is a coordinator setting), each with its own data dir.
render() { # mode -> wall seconds of one job
  local mode=$1 dir="$work/$1-$RANDOM"
  mkdir -p "$dir"
  "$bin" coordinator --insecure --listen 127.0.0.1:0 --data-dir "$dir/data" --metrics-listen off \
    --checkpoint-every "$mode" >"$dir/c.out" 2>"$dir/c.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q listening "$dir/c.out" 2>/dev/null && break; sleep 0.1; done
  local ep
  ep="http://$(head -1 "$dir/c.out" | awk '{print $NF}')"
  for i in 0 1; do
    "$bin" --coordinator "$ep" worker --insecure --listen 127.0.0.1:0 --id "w$i" --metrics-listen off 2>"$dir/w$i.log" &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    [ "$("$bin" --coordinator "$ep" --json workers 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  local t0 t1 job
  t0=$(date +%s.%N)
  job=$("$bin" --coordinator "$ep" submit --prompt "a slow red sunset over the sea" --frames 209 \
    --width "$width" --height "$height" --steps "$steps" --seed 3 --format latents)
  until "$bin" --coordinator "$ep" --json status "$job" | grep -q '"state":"\(done\|failed\)"'; do sleep 0.05; done
  t1=$(date +%s.%N)
  "$bin" --coordinator "$ep" --json status "$job" | grep -q '"state":"done"' || { echo "job failed: $(cat "$dir"/*.log | tail -5)" >&2; exit 1; }
  stop_all
  echo "$t1 - $t0" | bc -l
}

declare -A total
modes=(0 auto 1)
echo "job: 209 frames (3 windows) at ${width}x${height}, $steps steps, 2 workers; $(nproc) cores, $(date -u +%F)"
for r in $(seq 1 "$repeats"); do
  for m in "${modes[@]}"; do
    s=$(render "$m")
    total[$m]=$(echo "${total[$m]:-0} + $s" | bc -l)
    printf 'run %d  --checkpoint-every %-4s %7.2f s\n' "$r" "$m" "$s"
  done
done
off=$(echo "${total[0]} / $repeats" | bc -l)
for m in "${modes[@]}"; do
  mean=$(echo "${total[$m]} / $repeats" | bc -l)
  printf 'mean  --checkpoint-every %-4s %7.2f s  ratio to off %.3f\n' "$m" "$mean" "$(echo "$mean / $off" | bc -l)"
done
