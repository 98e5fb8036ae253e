#!/usr/bin/env bash
# What metrics cost: the same job rendered by a coordinator and 2 workers with metrics off, and
# with metrics on while a real Prometheus scrapes all three every second; runs alternate (off, on,
# off, on, ...) so drift on the machine hits both alike. Prints a Markdown table and the mean
# ratio (paste into benches/RESULTS.md with the date and machine).
# Usage: benches/metrics_overhead.sh [repeats] [steps]   (defaults: 3 repeats, 60 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
steps="${2:-60}"
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=$PWD/target/release/longshot
command -v prometheus >/dev/null || { echo "prometheus is needed (scripts/install-deps.sh test)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

metrics_addr() { # the address a process logged as "metrics on http://ADDR/metrics"
  for _ in $(seq 1 100); do
    a=$(grep -ho 'metrics on http://[0-9.:]*' "$1" 2>/dev/null | head -1 | sed 's|metrics on http://||')
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  echo "no metrics address in $1" >&2
  exit 1
}

run() { # $1: on|off, $2: run index; prints the job's wall seconds
  local mode=$1 dir="$work/$1-$2" offset=0
  [ "$1" = on ] && offset=1
  local port=$((52300 + $2 * 2 + offset))
  mkdir -p "$dir"
  local flag=off
  [ "$mode" = on ] && flag=127.0.0.1:0
  "$bin" coordinator --listen "127.0.0.1:$port" --data-dir "$dir/data" --metrics-listen "$flag" \
    >"$dir/coordinator.log" 2>&1 &
  pids+=($!)
  for i in 1 2; do
    "$bin" --coordinator "http://127.0.0.1:$port" worker --id "w$i" --metrics-listen "$flag" >"$dir/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  if [ "$mode" = on ]; then
    local targets
    targets=$(for f in "$dir"/coordinator.log "$dir"/worker-1.log "$dir"/worker-2.log; do printf "'%s'," "$(metrics_addr "$f")"; done)
    printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: longshot\n    static_configs:\n      - targets: [%s]\n' \
      "${targets%,}" >"$dir/prometheus.yml"
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
      --web.listen-address="127.0.0.1:$((port + 1000))" >"$dir/prometheus.log" 2>&1 &
    pids+=($!)
  fi
  for _ in $(seq 1 300); do
    [ "$("$bin" --json --coordinator "http://127.0.0.1:$port" workers 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  local job
  job=$("$bin" --coordinator "http://127.0.0.1:$port" submit --prompt "a slow red sunset over the sea" --frames 385 \
    --width 832 --height 480 --steps "$steps" --seed 1 --format latents --wait | head -1 | awk '{print $1}')
  "$bin" --json --coordinator "http://127.0.0.1:$port" status "$job" | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["state"] == "done", s
print((s["finished_unix_ms"] - s["submitted_unix_ms"]) / 1000)'
  if [ "$mode" = on ]; then
    # The scrapes really happened: Prometheus holds samples of the job's counters.
    local scraped=""
    for _ in $(seq 1 50); do
      python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$((port + 1000))/api/v1/query?query=count(longshot_build_info)" 2>/dev/null | grep -q '"3"' &&
        { scraped=yes; break; }
      sleep 0.2
    done
    [ -n "$scraped" ] || { echo "prometheus did not scrape all three exporters" >&2; exit 1; }
  fi
  stop_all
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "job: procedural model, 385 frames at 832x480, $steps steps, 2 workers; metrics on = /metrics served and scraped every 1 s"
echo
echo "| run | metrics off (s) | metrics on (s) | on / off |"
echo "|---:|---:|---:|---:|"
sum=0
for r in $(seq 1 "$repeats"); do
  off=$(run off "$r")
  on=$(run on "$r")
  ratio=$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.4f", a / b}')
  sum=$(awk -v s="$sum" -v x="$ratio" 'BEGIN{print s + x}')
  echo "| $r | $off | $on | $ratio |"
done
awk -v s="$sum" -v n="$repeats" 'BEGIN{printf "\nmean on/off: %.4f (%+.2f%%)\n", s / n, 100 * (s / n - 1)}'
