#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (fuzz/fuzz_targets/: protobuf messages → domain types,
# safetensors weights, latents files, model config JSON) with cargo fuzz (libFuzzer, AddressSanitizer).
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Each target starts from fuzz/seeds/<target>/ plus its corpus so far (fuzz/corpus/, not committed),
# and prints its executions. A crash stops the script with a non-zero exit; the reproducer is in
# fuzz/artifacts/<target>/ (turn it into a regression test, then fix the bug).
# Uses the nightly toolchain when rustup has one; otherwise the stable one with RUSTC_BOOTSTRAP=1
# (cargo fuzz passes -Z flags for the sanitizer and coverage). Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
export PROTOC="${PROTOC:-$(command -v protoc || true)}"
toolchain=()
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
cargo "${toolchain[@]}" fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! cargo "${toolchain[@]}" fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $t found a crash; the reproducer is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "$t: $runs executions in ${secs} s, no crash"
  rm -f "$log"
done
