#!/usr/bin/env bash
# What video-to-video adds to a render: the same 81-frame 832x480 clip (procedural model, 20 steps,
# 2 local workers, release build) as text-to-video, and as video-to-video from an 81-frame MP4 at
# strength 1 (every step runs: the difference is the client's ffmpeg decode and hash, the upload
# of the decoded frames, the coordinator's checks and the workers' encode) and at strength 0.6
# (12 of 20 steps run). Runs interleaved; prints each run's wall time and the worker's encode time
# (paste into benches/RESULTS.md with the date and machine).
# Usage: benches/v2v_overhead.sh [repeats]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=$PWD/target/release/longshot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ffmpeg -v error -y -f lavfi -i testsrc2=size=832x480:rate=16 -frames:v 81 -c:v libx264 -pix_fmt yuv420p "$work/in.mp4"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
job=(--prompt "a slow red sunset over the sea" --steps 20 --seed 1 --workers 2)
run() { # label, extra args... -> one line
  local label=$1 logs="$work/logs-$RANDOM"
  shift
  local t0 t1 enc
  t0=$(date +%s.%N)
  "$bin" render "${job[@]}" "$@" --logs "$logs" -o "$work/out.mp4" >/dev/null 2>&1
  t1=$(date +%s.%N)
  enc=$(grep -h 'encoded the input video' "$logs"/worker-*.log 2>/dev/null | grep -o 'secs=[0-9.]*' | cut -d= -f2 | paste -sd/ - || true)
  printf '%-22s wall %6.2f s   worker encode %s s\n' "$label" "$(echo "$t1 - $t0" | bc -l)" "${enc:--}"
}
for _ in $(seq 1 "$repeats"); do
  run "text-to-video" --frames 81 --width 832 --height 480
  run "video-to-video s=1" --video "$work/in.mp4" --strength 1
  run "video-to-video s=0.6" --video "$work/in.mp4" --strength 0.6
done
