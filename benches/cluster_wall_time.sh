#!/usr/bin/env bash
# Wall time of a 60-second clip (16 fps, 480x832, procedural model) rendered by `longshot render`
# with 1, 2 and 4 local worker processes, plus each worker's per-step exchange wait and bytes, read
# from the worker logs. Prints a Markdown table (paste it into benches/RESULTS.md with the date).
# Usage: benches/cluster_wall_time.sh [steps] [seconds]   (defaults: 20 steps, 60 s)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}"
seconds="${2:-60}"
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=target/release/longshot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: $bin render --prompt 'a slow red sunset over the sea' --duration $seconds --fps 16 --width 832 --height 480 --steps $steps --seed 1 --workers N"
echo
echo "| workers | wall time (s) | vs 1 worker | exchange wait per step (ms, per worker) | overlap bytes sent per step (per worker) |"
echo "|---:|---:|---:|---|---|"
base=""
for n in 1 2 4; do
  logs="$work/logs-$n"
  start=$(date +%s.%N)
  "$bin" --json render --prompt "a slow red sunset over the sea" --duration "$seconds" --fps 16 --width 832 --height 480 \
    --steps "$steps" --seed 1 --workers "$n" -o "$work/clip-$n.mp4" --logs "$logs" > "$work/render-$n.json"
  end=$(date +%s.%N)
  wall=$(awk "BEGIN{print $end - $start}")
  [ -z "$base" ] && base=$wall
  ratio=$(awk "BEGIN{print $base / $wall}")
  waits=$(grep -ho 'exchange wait [0-9.]* ms' "$logs"/worker-*.log | awk '{print $3}' | paste -sd/ -)
  bytes=$(grep -ho '([0-9]* per step)' "$logs"/worker-*.log | tr -d '(' | awk '{print $1}' | paste -sd/ -)
  printf '| %d | %.1f | %.2fx | %s | %s |\n' "$n" "$wall" "$ratio" "${waits:--}" "${bytes:--}"
done
