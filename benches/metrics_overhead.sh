#!/usr/bin/env bash
# What metrics cost, two ways in one run (paste the output into benches/RESULTS.md with the date):
# 1. End to end: the same job rendered by a coordinator and 2 workers with metrics off, and with
#    metrics on while a real Prometheus scrapes all three every second; runs alternate (off, on,
#    off, on, ...) so drift on the machine hits both alike. Mean on/off ratio with a 95% interval.
#    The render-path updates run in both modes (an unexported registry), so this measures serving.
# 2. Accounted: after each "on" render, the CPU each process spends per scrape (its /proc CPU
#    time over SCRAPES back-to-back scrapes) times the scrapes the render saw, plus the
#    render-path updates (how many steps, forwards and overlap messages the workers' counters
#    say the render did, times each one's cost from worker/benches/metrics_cost.rs), as a share
#    of the render's wall time: an upper bound, as if every microsecond were on the critical path.
# Usage: benches/metrics_overhead.sh [repeats] [steps]   (defaults: 3 repeats, 60 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
steps="${2:-60}"
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
cargo build --release --locked -q -p longshot-cli
bin=$PWD/target/release/longshot
costs=$(cargo bench --locked -q -p longshot-worker --bench metrics_cost 2>/dev/null | grep -E '^[a-z_]+ [0-9.]+$')
[ -n "$costs" ] || { echo "worker/benches/metrics_cost printed no costs" >&2; exit 1; }
SCRAPES=${SCRAPES:-3000}
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

account() { # the render just finished in $1: "CPU s per scrape of coordinator, worker 1, worker 2; update s"
  python3 - "$SCRAPES" "$costs" "${pids[0]}" "$(metrics_addr "$1/coordinator.log")" \
    "${pids[1]}" "$(metrics_addr "$1/worker-1.log")" "${pids[2]}" "$(metrics_addr "$1/worker-2.log")" <<'PY'
import os, sys, urllib.request
n, costs, procs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
ns = dict((k, float(v)) for k, v in (l.split() for l in costs.splitlines()))
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):  # utime + stime, seconds
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def get(addr):
    return urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
def total(text, name):
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " "))
per_scrape, updates = [], 0.0
for pid, addr in zip(procs[0::2], procs[1::2]):
    t0 = cpu(pid)
    for _ in range(n):
        body = get(addr)
    per_scrape.append((cpu(pid) - t0) / n)
    if "longshot_worker_step_seconds" in body:
        steps = total(body, "longshot_worker_step_seconds_count")
        forwards = total(body, "longshot_worker_forward_seconds_count")
        messages = total(body, "longshot_worker_exchange_wait_seconds_count")
        updates += 1e-9 * (steps * ns["step_done"] + forwards * ns["forward_timer"]
                           + messages * (ns["exchange_send"] + ns["exchange_recv"]))
print(" ".join(f"{c:.6f}" for c in per_scrape), f"{updates:.6f}")
PY
}

run() { # $1: on|off, $2: run index; prints the job's wall seconds
  local mode=$1 dir="$work/$1-$2" offset=0
  [ "$1" = on ] && offset=1
  local port=$((52300 + $2 * 2 + offset))
  mkdir -p "$dir"
  local flag=off
  [ "$mode" = on ] && flag=127.0.0.1:0
  "$bin" coordinator --insecure --listen "127.0.0.1:$port" --data-dir "$dir/data" --metrics-listen "$flag" \
    >"$dir/coordinator.log" 2>&1 &
  pids+=($!)
  for i in 1 2; do
    "$bin" --coordinator "http://127.0.0.1:$port" worker --insecure --id "w$i" --metrics-listen "$flag" >"$dir/worker-$i.log" 2>&1 &
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
    account "$dir" >"$work/account-$2"
  fi
  stop_all
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "job: procedural model, 385 frames at 832x480, $steps steps, 2 workers; metrics on = /metrics served and scraped every 1 s"
echo
echo "per-operation costs (ns, worker/benches/metrics_cost.rs): $(echo $costs)"
echo
echo "| run | metrics off (s) | metrics on (s) | on / off | CPU per scrape: coordinator, worker 1, worker 2 (ms) | accounted cost of the on run |"
echo "|---:|---:|---:|---:|---|---:|"
ratios=()
for r in $(seq 1 "$repeats"); do
  off=$(run off "$r")
  on=$(run on "$r")
  ratios+=("$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.4f", a / b}')")
  # Scrapes seen: one per second per exporter over the render; updates: as counted.
  read -r c w1 w2 upd <"$work/account-$r"
  share=$(awk -v c="$c" -v a="$w1" -v b="$w2" -v u="$upd" -v t="$on" \
    'BEGIN{printf "%.4f%%", 100 * ((c + a + b) * t + u) / t}')
  ms=$(awk -v c="$c" -v a="$w1" -v b="$w2" 'BEGIN{printf "%.3f, %.3f, %.3f", 1e3 * c, 1e3 * a, 1e3 * b}')
  echo "| $r | $off | $on | ${ratios[-1]} | $ms | $share |"
done
python3 - "${ratios[@]}" <<'PY'
import statistics as st, sys
r = [float(x) for x in sys.argv[1:]]
m = st.mean(r)
# Student's t, 97.5th percentile, for n − 1 degrees of freedom (n ≤ 10 covered; else normal).
t = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}.get(len(r) - 1, 1.96)
half = t * st.stdev(r) / len(r) ** 0.5 if len(r) > 1 else float("inf")
print(f"\nmean on/off: {m:.4f} ({100 * (m - 1):+.2f}%), 95% interval {100 * (m - half - 1):+.2f}% .. {100 * (m + half - 1):+.2f}%")
PY
