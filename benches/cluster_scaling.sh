#!/usr/bin/env bash
# Cluster scaling without GPUs: a coordinator and 1, 2, 4, 8, 16 worker processes on loopback render
# one 16-window clip with the stand-in model (models/src/standin.rs: every forward waits a set time,
# as a GPU would, and computes nothing). The model's time is then known exactly, so what remains is
# what the cluster costs: scheduling, the overlap exchange (~2 MB per boundary per step at
# 480x832), the blend, the schedulers, the decode hand-off to the coordinator.
#
# Prints a Markdown table (paste it into benches/RESULTS.md with the date and machine):
# wall time from submit to done, the ideal (1-worker time / N), scaling efficiency, and per-step
# exchange wait and blend from the worker logs, as a share of the step.
# Usage: benches/cluster_scaling.sh [forward_ms] [steps] [worker counts...]
#        (defaults: 350 ms per forward, i.e. a 0.7 s CFG step; 10 steps; 1 2 4 8 16)
set -euo pipefail
cd "$(dirname "$0")/.."
forward_ms="${1:-350}"
steps="${2:-10}"
shift $(( $# > 2 ? 2 : $# ))
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2 4 8 16)
# 261 latent frames = 16 windows of 21 with overlap 5: 1041 output frames (65 s at 16 fps).
frames=1041
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=$PWD/target/release/longshot
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "stand-in forward: ${forward_ms} ms (two per step with CFG); $steps steps; 16 windows, 480x832, $frames frames, --format latents"
echo
echo "| workers | wall (s) | ideal (s) | efficiency | model per step (ms) | exchange wait per step (ms) | blend per step (ms) | exchange + blend share of a step |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
base=""
port=52100
for n in "${counts[@]}"; do
  port=$((port + 1))
  dir="$work/run-$n"
  mkdir -p "$dir"
  endpoint="http://127.0.0.1:$port"
  "$bin" coordinator --insecure --listen "127.0.0.1:$port" --data-dir "$dir/data" --heartbeat 1 --metrics-listen 127.0.0.1:0 >"$dir/coordinator.log" 2>&1 &
  pids+=($!)
  for i in $(seq 1 "$n"); do
    "$bin" --coordinator "$endpoint" worker --insecure --id "w$i" --device cpu --standin-forward-ms "$forward_ms" --metrics-listen 127.0.0.1:0 \
      >"$dir/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 300); do
    live=$("$bin" --json --coordinator "$endpoint" workers 2>/dev/null | grep -c '"standin"' || true)
    [ "$live" -ge "$n" ] && break
    sleep 0.2
  done
  [ "$live" -ge "$n" ] || { echo "only $live of $n workers registered; see $dir" >&2; exit 1; }
  "$bin" --json --coordinator "$endpoint" submit --model standin --prompt "a stand-in clip" --frames "$frames" \
    --width 832 --height 480 --steps "$steps" --seed 1 --format latents --wait >"$dir/submit.json"
  job=$(head -1 "$dir/submit.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  read -r state wall workers < <("$bin" --json --coordinator "$endpoint" status "$job" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["state"], (s["finished_unix_ms"] - s["submitted_unix_ms"]) / 1000, s["plan"]["workers"])')
  [ "$state" = done ] || { echo "job $job ended $state with $n workers; see $dir" >&2; exit 1; }
  [ "$workers" = "$n" ] || { echo "the job ran on $workers workers, not $n" >&2; exit 1; }
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  [ -z "$base" ] && base=$wall
  # Per-step figures: the mean over workers of each worker's "per step model X ms, exchange wait Y ms,
  # blend Z ms" line.
  read -r model exch blend < <(grep -ho 'per step model [0-9.]* ms, exchange wait [0-9.]* ms, blend [0-9.]* ms' \
    "$dir"/worker-*.log | awk '{m+=$4; e+=$8; b+=$11; k++} END {if (k) printf "%.1f %.2f %.3f\n", m/k, e/k, b/k; else print "0 0 0"}')
  awk -v n="$n" -v wall="$wall" -v base="$base" -v m="$model" -v e="$exch" -v b="$blend" 'BEGIN {
    ideal = base / n
    step = m + e + b
    printf "| %d | %.1f | %.1f | %.1f%% | %s | %s | %s | %.2f%% |\n", n, wall, ideal, 100 * ideal / wall, m, e, b, (step > 0 ? 100 * (e + b) / step : 0)
  }'
done
