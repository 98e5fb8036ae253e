#!/usr/bin/env bash
# What TLS costs on the data path: the same job rendered by a coordinator and 2 workers (release
# build, loopback) in plaintext (`--insecure`) and with mutual TLS between members (a CA and one
# member certificate from `longshot certs`), runs interleaved (plain, tls, plain, ...) so drift
# hits both alike. Every denoising step exchanges overlaps between the workers and the latents
# stream to the coordinator, all over TLS in the second mode. Prints each run's wall time, the
# mean per mode and the ratio of TLS to plaintext (paste into benches/RESULTS.md with the date and
# machine).
# Usage: benches/tls_overhead.sh [repeats] [steps] [size]   (defaults: 3, 100, 512x512)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
steps="${2:-100}"
size="${3:-512x512}"
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
"$bin" certs init --dir "$work/certs" >/dev/null
"$bin" certs issue member --dir "$work/certs" >/dev/null

render() { # mode (plain|tls) -> wall seconds of one job
  local mode=$1 dir="$work/$1-$RANDOM" scheme sec=()
  mkdir -p "$dir"
  if [ "$mode" = tls ]; then
    scheme=https
    sec=(--ca "$work/certs/ca.pem" --cert "$work/certs/member.pem" --key "$work/certs/member.key")
  else
    scheme=http
    sec=(--insecure)
  fi
  "$bin" coordinator "${sec[@]}" --listen 127.0.0.1:0 --data-dir "$dir/data" --metrics-listen off \
    >"$dir/c.out" 2>"$dir/c.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q listening "$dir/c.out" 2>/dev/null && break; sleep 0.1; done
  local ep cli
  ep="$scheme://$(head -1 "$dir/c.out" | awk '{print $NF}')"
  cli=("$bin" --coordinator "$ep" --ca "$work/certs/ca.pem")
  [ "$mode" = tls ] || cli=("$bin" --coordinator "$ep")
  for i in 0 1; do
    "$bin" --coordinator "$ep" worker "${sec[@]}" --listen 127.0.0.1:0 --id "w$i" --metrics-listen off \
      2>"$dir/w$i.log" &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    [ "$("${cli[@]}" --json workers 2>/dev/null | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  local t0 t1 job
  t0=$(date +%s.%N)
  job=$("${cli[@]}" submit --prompt "a slow red sunset over the sea" --frames 209 \
    --width "$width" --height "$height" --steps "$steps" --seed 3 --format latents)
  until "${cli[@]}" --json status "$job" | grep -q '"state":"\(done\|failed\)"'; do sleep 0.05; done
  t1=$(date +%s.%N)
  "${cli[@]}" --json status "$job" | grep -q '"state":"done"' || { echo "job failed: $(cat "$dir"/*.log | tail -5)" >&2; exit 1; }
  stop_all
  echo "$t1 - $t0" | bc -l
}

declare -A total
modes=(plain tls)
echo "job: 209 frames (3 windows) at ${width}x${height}, $steps steps, 2 workers; $(nproc) cores, $(date -u +%F)"
for r in $(seq 1 "$repeats"); do
  for m in "${modes[@]}"; do
    s=$(render "$m")
    total[$m]=$(echo "${total[$m]:-0} + $s" | bc -l)
    printf 'run %d  %-5s %7.2f s\n' "$r" "$m" "$s"
  done
done
plain=$(echo "${total[plain]} / $repeats" | bc -l)
for m in "${modes[@]}"; do
  mean=$(echo "${total[$m]} / $repeats" | bc -l)
  printf 'mean  %-5s %7.2f s  ratio to plaintext %.3f\n' "$m" "$mean" "$(echo "$mean / $plain" | bc -l)"
done
