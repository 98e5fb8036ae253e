#!/usr/bin/env bash
# Longshot's device harness: everything the GPU machine runs, in one call of at most 8 minutes.
# scripts/gpu/pack.sh builds the binaries and copies this script into .device-pack/scripts/;
# .device-pack/run.sh calls it. Steps, in order, each under `timeout` with its elapsed time printed;
# a step that fails or times out is recorded and the next step still runs:
#   checks            libcuda, NVRTC (+ builtins, by a test compile), cuBLASLt, NCCL load; a GPU?
#   torch_forward     diffusers + PyTorch, Wan2.1-1.3B transformer, random bf16 weights,
#                     480x832x81: 1 warm-up (profiled: which SDPA backend) + N timed forwards
#   longshot_forward  Longshot's GpuWanTransformer, same shape: 1 warm-up + N timed
#   torch_vae_decode  diffusers' AutoencoderKLWan (Wan2.1 config, random f32 weights, as WanPipeline
#                     keeps its VAE) decoding a [1,16,21,60,104] latent to 81 frames of 480x832:
#                     a tiny CPU smoke run of the script, then 1 warm-up + N timed decodes
#   longshot_vae_decode  Longshot's GpuWanVaeDecoder (random weights), same latent: 1 warm-up + N
#   gpu_kernels       the kernel table (bandwidth vs copy, GEMM and attention TFLOP/s)
#   nvrtc_compile … worker_device, render_1_vs_2   the parity tests and the 1-vs-2-worker render
# Without a GPU (or with HARNESS_GPU=none) every GPU step prints "skipped: no GPU" and the table
# says so: scripts/gpu/harness-selftest.sh runs it that way in scripts/test.sh. If there is a GPU
# but a library is missing, the checks step prints one line naming it and the harness stops.
#
# Writes $OUT/results.md (the table; also printed at the end) and $OUT/harness-logs.tar.gz (every
# log and the table); $OUT defaults to <pack>/harness-out. The device tool copies $OUT back.
# Environment: OUT; HARNESS_PACK (default: the pack this script is in, or the repository's
# .device-pack); HARNESS_GPU =
# auto (default) | none | fake (self-test only: assume a GPU, run whatever the pack holds);
# HARNESS_FORWARD_ITERS (timed forwards of each model, default 2); HARNESS_FORWARD_PHASES=0 (no
# per-phase Longshot forward); HARNESS_VAE_ITERS (timed decodes of each VAE, default 2); QUICK=1
# (2-layer forwards, 17-frame decodes); HARNESS_TIMEOUT_<step> (seconds);
# HARNESS_BUDGET_S (default 480).
#   harness.sh --list-steps   prints the steps and their timeouts
set -uo pipefail

# The total budget, start-up checks included, and the per-step timeouts in run order. Their sum
# must leave RESERVE_S for writing the table and the tarball (checked below).
BUDGET_S=${HARNESS_BUDGET_S:-480}
RESERVE_S=10
# The timed steps (torch_*, longshot_*) start a timed run only when it fits their timeout, so they
# report what fitted rather than time out.
STEPS=(
  checks:15
  torch_forward:70
  longshot_forward:85
  torch_vae_decode:55
  longshot_vae_decode:45
  gpu_kernels:40
  nvrtc_compile:10
  gpu_denoise:15
  gpu_transformer:15
  gpu_vae:15
  gpu_nccl:10
  gpu_parity_core:10
  gpu_parity_models:15
  wan_gpu:20
  wan_gpu_vae:20
  worker_device:10
  render_1_vs_2:20
)
# The test binaries run as parity steps (render_1_vs_2 is a script step).
PARITY="nvrtc_compile gpu_denoise gpu_transformer gpu_vae gpu_nccl gpu_parity_core gpu_parity_models wan_gpu wan_gpu_vae worker_device"

step_timeout() {
  local s name=$1 var="HARNESS_TIMEOUT_$1"
  for s in "${STEPS[@]}"; do
    if [ "${s%%:*}" = "$name" ]; then echo "${!var:-${s##*:}}"; return; fi
  done
}

now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Step bodies. Each runs in its own process (`harness.sh --step NAME`, under timeout), writes its
# log to $LOGS/NAME.log and one line of result to $LOGS/NAME.summary; its exit status is the
# step's.
summary() { echo "$*" > "$LOGS/$STEP.summary"; }

need_bin() {
  if [ ! -x "$PACK/bin/$1" ]; then
    summary "bin/$1 is not in the pack (scripts/gpu/pack.sh builds it)"
    echo "bin/$1 is not in the pack" >&2
    exit 1
  fi
}

step_checks() {
  {
    echo "commit: $COMMIT"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  } > "$LOGS/checks.log"
  python3 "$SCRIPTS/probe_libs.py" >> "$LOGS/checks.log" 2>&1
  local rc=$?
  summary "$(tail -1 "$LOGS/checks.log" | sed 's/^verdict: //')"
  return $rc
}

# diffusers is not on the device machine: pack.sh carries its wheel (and the one dependency it
# lacks), installed once into $WORK/py-site by the first torch step that runs.
py_site() {
  local site="$WORK/py-site"
  if [ ! -e "$site/.installed" ] && ls "$PACK"/wheels/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$PACK"/wheels/*.whl \
      > "$LOGS/$STEP.pip.log" 2>&1 || { summary "pip install of the packed wheels failed"; return 1; }
    touch "$site/.installed"
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}

# The median of the timed runs on the last (JSON) line of a torch script's log; empty when none.
torch_median() {
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["ms_median"] or "")' \
    "$1" 2>/dev/null
}

step_torch_forward() {
  local layers=""
  [ "${QUICK:-0}" = 1 ] && layers=2
  py_site || return 1
  python3 "$SCRIPTS/torch_wan_forward.py" --config 1.3b \
    --warmup 1 --iters "$ITERS" ${layers:+--layers $layers} > "$LOGS/torch_forward.log" 2>&1
  local rc=$?
  summary "$(python3 - "$LOGS/torch_forward.log" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    print("no result line"); raise SystemExit
med = r.get("ms_median")
s = r.get("sdpa", {})
print(f"median {med:.1f} ms of {len(r['ms_all'])} timed" if med is not None else "no timed forward", end="")
print(f", warm-up {r['warmup_ms'][0]:.1f} ms" if r.get("warmup_ms") else "", end="")
print(f", SDPA backend: {s.get('backend', 'unknown')}, torch {r['versions']['torch']}, diffusers {r['versions']['diffusers']}")
PY
)"
  return $rc
}

step_longshot_forward() {
  need_bin wan_gpu_forward
  local t=${HARNESS_STEP_LIMIT:-$(step_timeout longshot_forward)}
  [ "${QUICK:-0}" = 1 ] && export LONGSHOT_WAN_BENCH_LAYERS=2
  # Weights, text encoding and the kernel compile come before the forwards: 20 s for them.
  LONGSHOT_WAN_BENCH_ITERS="$ITERS" LONGSHOT_WAN_BENCH_PHASES="${HARNESS_FORWARD_PHASES:-1}" \
    LONGSHOT_WAN_BENCH_BUDGET_S="$((t > 40 ? t - 20 : t / 2))" \
    "$PACK/bin/wan_gpu_forward" > "$LOGS/longshot_forward.log" 2>&1
  local rc=$?
  local r
  r=$(grep -E '^RESULT wan_gpu_forward' "$LOGS/longshot_forward.log" | tail -1)
  if [ -n "$r" ]; then
    summary "$(echo "$r" | sed -nE 's/.*warmup_ms=([0-9.]+) timed=([0-9]+) ms=([0-9.]+) median_ms=([0-9.]+) tflops=([0-9.]+).*/median \4 ms of \2 timed, warm-up \1 ms, \5 TFLOP\/s (best)/p')"
  else
    summary "no RESULT line: $(tail -1 "$LOGS/longshot_forward.log")"
  fi
  return $rc
}

step_torch_vae_decode() {
  local t=${HARNESS_STEP_LIMIT:-$(step_timeout torch_vae_decode)} frames=81 smoke=0 rc
  [ "${QUICK:-0}" = 1 ] && frames=17
  py_site || return 1
  # The script's CPU smoke test (a tiny VAE): the development machine has no PyTorch to run it.
  python3 "$SCRIPTS/torch_wan_vae_decode.py" --config tiny --device cpu --frames 5 --height 32 --width 32 \
    --iters 1 > "$LOGS/torch_vae_decode.smoke.log" 2>&1 || smoke=1
  # The budget counts from the script's start, imports included; 5 s kept for the summary.
  python3 "$SCRIPTS/torch_wan_vae_decode.py" --frames "$frames" --warmup 1 --iters "$VAE_ITERS" \
    --budget-s "$((t - SECONDS - 5))" > "$LOGS/torch_vae_decode.log" 2>&1
  rc=$?
  summary "$(python3 - "$LOGS/torch_vae_decode.log" "$smoke" <<'PY'
import json, sys
smoke = "; CPU smoke test FAILED (logs/torch_vae_decode.smoke.log)" if sys.argv[2] == "1" else ""
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    print("no result line" + smoke); raise SystemExit
med = r.get("ms_median")
print(f"median {med:.1f} ms of {len(r['ms_all'])} timed" if med is not None else "no timed decode", end="")
print(f", warm-up {r['warmup_ms'][0]:.1f} ms" if r.get("warmup_ms") else "", end="")
print(f", {r['dtype']} (TF32 convs {'on' if r.get('tf32_conv') else 'off'}), to host {r['to_host_ms']:.1f} ms", end="")
print("" if r.get("finite") else ", NON-FINITE frames", end="")
print(f", torch {r['versions']['torch']}, diffusers {r['versions']['diffusers']}{smoke}")
PY
)"
  [ $rc = 0 ] && return $smoke
  return $rc
}

step_longshot_vae_decode() {
  need_bin wan_gpu_vae_decode
  local t=${HARNESS_STEP_LIMIT:-$(step_timeout longshot_vae_decode)} rc r
  [ "${QUICK:-0}" = 1 ] && export LONGSHOT_VAE_BENCH_LATENT_FRAMES=5
  # Its budget counts from the binary's start (weights and kernel compiles included).
  LONGSHOT_VAE_BENCH_ITERS="$VAE_ITERS" LONGSHOT_VAE_BENCH_BUDGET_S="$((t > 10 ? t - 3 : t))" \
    "$PACK/bin/wan_gpu_vae_decode" > "$LOGS/longshot_vae_decode.log" 2>&1
  rc=$?
  r=$(grep -E '^RESULT wan_gpu_vae_decode' "$LOGS/longshot_vae_decode.log" | tail -1)
  if [ -n "$r" ]; then
    summary "$(echo "$r" | sed -nE 's/.*warmup_ms=([0-9.]+) timed=([0-9]+) ms=([0-9.]+) median_ms=([0-9.]+) download_ms=([0-9.]+).*/median \4 ms of \2 timed, warm-up \1 ms, of which the download to the host \5 ms/p')"
  else
    summary "no RESULT line: $(tail -1 "$LOGS/longshot_vae_decode.log")"
  fi
  return $rc
}

step_gpu_kernels() {
  need_bin gpu_kernels
  "$PACK/bin/gpu_kernels" > "$LOGS/gpu_kernels.log" 2>&1
  local rc=$?
  local r
  r=$(sed -nE 's/^RESULT gpu_kernels rows=([0-9]+) failed=(.*)$/\1 rows, \2 failed/p' "$LOGS/gpu_kernels.log" | tail -1)
  summary "${r:-no RESULT line: $(tail -1 "$LOGS/gpu_kernels.log")}"
  return $rc
}

step_parity() {
  need_bin "$STEP"
  local filter=""
  # The worker's unit tests: only device selection needs the GPU (as scripts/test.sh's `--lib device`).
  [ "$STEP" = worker_device ] && filter=device
  "$PACK/bin/$STEP" $filter --test-threads=1 --show-output > "$LOGS/$STEP.log" 2>&1
  local rc=$?
  local ok failed ignored
  ok=$(grep -cE '^test .* \.\.\. ok$' "$LOGS/$STEP.log")
  failed=$(grep -cE '^test .* \.\.\. FAILED$' "$LOGS/$STEP.log")
  ignored=$(grep -cE '^test .* \.\.\. ignored' "$LOGS/$STEP.log")
  summary "$ok passed, $failed failed, $ignored ignored$(grep -qE '^test result' "$LOGS/$STEP.log" || echo ' (did not finish)')"
  return $rc
}

step_render_1_vs_2() {
  need_bin longshot
  local tiny="$WORK/tiny-wan" n c render_ok=1
  if [ ! -d "$LONGSHOT_WAN_FIXTURES" ]; then
    summary "no fixtures at $LONGSHOT_WAN_FIXTURES (run the pack from inside the repository)"
    return 1
  fi
  rm -rf "$tiny"
  mkdir -p "$tiny"
  for c in transformer vae scheduler; do cp -r "$LONGSHOT_WAN_FIXTURES/pipeline_tiny/$c" "$tiny/"; done
  for c in text_encoder tokenizer; do cp -r "$LONGSHOT_WAN_FIXTURES/umt5_tiny/$c" "$tiny/"; done
  cat > "$tiny/model_index.json" <<'JSON'
{"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
 "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
 "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
JSON
  {
    for n in 1 2; do
      "$PACK/bin/longshot" render --model "$tiny" --prompt "a lighthouse at dusk" --frames 197 --width 48 --height 32 \
        --steps 3 --seed 7 --workers $n --logs "$LOGS/render-$n" -o "$WORK/render-$n.safetensors" \
        > "$LOGS/render-$n.log" 2>&1 || { render_ok=0; tail -5 "$LOGS/render-$n.log"; }
    done
    grep -h "transformer on" "$LOGS"/render-*/worker-*.log 2>/dev/null
    # Informational: two workers on one GPU exchange over TCP (NCCL refuses two ranks on one device).
    grep -h "NCCL\|overlaps go over TCP" "$LOGS"/render-2/worker-*.log 2>/dev/null | head -2
  } > "$LOGS/render_1_vs_2.log" 2>&1
  if grep -qh "transformer on cpu" "$LOGS"/render-*/worker-*.log 2>/dev/null; then
    summary "the workers ran the transformer on the CPU, not the GPU"
    return 1
  fi
  if [ $render_ok = 0 ]; then summary "a render failed (logs/render-N.log)"; return 1; fi
  WORK="$WORK" python3 - >> "$LOGS/render_1_vs_2.log" 2>&1 <<'PY'
import os
from safetensors.numpy import load_file
w = os.environ["WORK"]
a, b = load_file(f"{w}/render-1.safetensors")["latents"], load_file(f"{w}/render-2.safetensors")["latents"]
same = a.shape == b.shape and a.tobytes() == b.tobytes()
print(f"GPU render latents {a.shape}: 1 vs 2 workers {'bit-identical' if same else 'DIFFER'}")
raise SystemExit(0 if same else 1)
PY
  local rc=$?
  summary "$(tail -1 "$LOGS/render_1_vs_2.log")"
  return $rc
}

if [ "${1:-}" = "--list-steps" ]; then
  for s in "${STEPS[@]}"; do echo "${s%%:*} $(step_timeout "${s%%:*}")"; done
  exit 0
fi

if [ "${1:-}" = "--step" ]; then
  STEP=$2
  case "$STEP" in
    checks | torch_forward | longshot_forward | torch_vae_decode | longshot_vae_decode | gpu_kernels | render_1_vs_2)
      "step_$STEP" ;;
    *) step_parity ;;
  esac
  exit $?
fi

# ---------------------------------------------------------------------------------------------
# The driver.
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
# In the pack this script is <pack>/scripts/harness.sh; in the repository, scripts/gpu/harness.sh.
if [ -n "${HARNESS_PACK:-}" ]; then PACK=$HARNESS_PACK
elif [ -f "$SCRIPTS/../run.sh" ]; then PACK=$SCRIPTS/..
else PACK=$SCRIPTS/../../.device-pack
fi
mkdir -p "$PACK"
PACK="$(cd "$PACK" && pwd)"
OUT="${OUT:-$PACK/harness-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
WORK="$PACK/harness-work"
rm -rf "$LOGS" "$WORK" "$OUT/results.md" "$OUT/harness-logs.tar.gz"
mkdir -p "$LOGS" "$WORK"
GPU_MODE=${HARNESS_GPU:-auto}
ITERS=${HARNESS_FORWARD_ITERS:-2}
VAE_ITERS=${HARNESS_VAE_ITERS:-2}
START=$(now)
if [ -s "$PACK/COMMIT" ]; then
  COMMIT="$(cat "$PACK/COMMIT")$([ -s "$PACK/DIRTY" ] && echo ' (with uncommitted changes)')"
else
  COMMIT="$(git -C "$SCRIPTS" rev-parse HEAD 2>/dev/null || echo unknown) (not packed)"
fi
export SCRIPTS PACK OUT LOGS WORK ITERS VAE_ITERS COMMIT
# The pack travels inside the repository's working tree, which holds the Wan fixtures.
export LONGSHOT_WAN_FIXTURES="${LONGSHOT_WAN_FIXTURES:-$(cd "$PACK/.." && pwd)/models/tests/fixtures/wan}"
export LONGSHOT_KERNEL_CACHE="${LONGSHOT_KERNEL_CACHE:-$WORK/kernel-cache}"
[ -d "$PACK/kernels/cuda" ] && export LONGSHOT_KERNEL_SOURCES="$PACK/kernels/cuda"

total=0
for s in "${STEPS[@]}"; do total=$((total + $(step_timeout "${s%%:*}"))); done
if [ $total -gt $((BUDGET_S - RESERVE_S)) ]; then
  echo "harness: the step timeouts sum to ${total} s, over the budget of ${BUDGET_S} s less ${RESERVE_S} s" >&2
  exit 2
fi
echo "harness: ${#STEPS[@]} steps, timeouts summing to ${total} s of a ${BUDGET_S} s budget; GPU mode ${GPU_MODE}; logs in $LOGS"

# The CUDA libraries of Python's nvidia-* packages, on LD_LIBRARY_PATH.
LIBS=$(python3 - <<'PY'
import os, glob, site
roots = []
try:
    import nvidia
    roots += list(nvidia.__path__)
except ImportError:
    pass
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    roots.append(os.path.join(sp, "nvidia"))
dirs = []
for root in roots:
    dirs += glob.glob(os.path.join(root, "*", "lib"))      # nvidia/<package>/lib (nccl: nvidia/nccl/lib)
    dirs += glob.glob(os.path.join(root, "cu13", "lib"))    # nvidia/cu13/lib (CUDA 13 wheels)
print(":".join(sorted(set(os.path.realpath(d) for d in dirs if os.path.isdir(d)))))
PY
)
[ -z "$LIBS" ] && echo "harness: python3 has no 'nvidia' packages (nvidia-cuda-nvrtc 13.0, nvidia-cublas, nvidia-nccl-cu13)"
# cudarc opens libnccl.so; pip's nvidia-nccl ships libnccl.so.2 only: link it under the unversioned name.
mkdir -p "$WORK/lib-links"
IFS=: read -ra LIBDIRS <<< "$LIBS"
for d in "${LIBDIRS[@]}"; do
  for f in "$d"/libnccl.so "$d"/libnccl.so.2; do
    if [ ! -e "$WORK/lib-links/libnccl.so" ] && [ -e "$f" ]; then ln -s "$f" "$WORK/lib-links/libnccl.so"; fi
  done
done
export LD_LIBRARY_PATH="$WORK/lib-links${LIBS:+:$LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

declare -A STATUS ELAPSED LIMIT
gpu=unknown
stop=""
i=0
for s in "${STEPS[@]}"; do
  name=${s%%:*}
  i=$((i + 1))
  limit=$(step_timeout "$name")
  LIMIT[$name]=$limit
  ELAPSED[$name]="-"
  # Never past the budget: a step gets what is left of it, at most its own timeout.
  left=$(awk -v b="$BUDGET_S" -v r="$RESERVE_S" -v e="$(since "$START")" 'BEGIN { printf "%d", b - r - e }')
  [ "$left" -lt "$limit" ] && limit=$left
  skip=""
  if [ -n "$stop" ]; then skip="not run: $stop"
  elif [ "$name" != checks ] && [ "$gpu" = no ]; then skip="skipped: no GPU"
  elif [ "$limit" -lt 1 ]; then skip="not run: budget spent"
  fi
  if [ -n "$skip" ]; then
    STATUS[$name]=$skip
    echo "$skip" > "$LOGS/$name.log" # every step has a log in the tarball
    echo "--- [$i/${#STEPS[@]}] $name: $skip"
    continue
  fi
  echo "==> [$i/${#STEPS[@]}] $name (timeout ${limit} s)"
  t0=$(now)
  STEP=$name HARNESS_STEP_LIMIT=$limit timeout -k 5 "$limit" bash "$SCRIPTS/harness.sh" --step "$name"
  rc=$?
  ELAPSED[$name]=$(since "$t0")
  case $rc in
    0) STATUS[$name]=ok ;;
    124 | 137) STATUS[$name]="TIMEOUT after ${limit} s" ;;
    *) STATUS[$name]="FAILED (exit $rc)" ;;
  esac
  if [ "$name" = checks ]; then
    case "$GPU_MODE:$rc" in
      none:* | auto:3) gpu=no; STATUS[$name]="ok (no GPU)" ;;
      fake:*) gpu=yes; STATUS[$name]="ok (fake GPU: self-test)" ;;
      auto:0) gpu=yes ;;
      *)
        stop="checks failed"
        # The one clear line: what is missing and how to get it.
        echo "harness: stopping: $(cat "$LOGS/checks.summary" 2>/dev/null || echo "the checks step exited $rc")"
        ;;
    esac
  fi
  # A killed step wrote no summary: say how far it got.
  if [ ! -s "$LOGS/$name.summary" ] && [ -s "$LOGS/$name.log" ]; then
    if [[ " $PARITY " == *" $name "* ]]; then
      echo "$(grep -cE '^test .* \.\.\. ok$' "$LOGS/$name.log") passed, $(grep -cE '^test .* \.\.\. FAILED$' "$LOGS/$name.log") failed before it stopped" > "$LOGS/$name.summary"
    else
      echo "last line: $(tail -1 "$LOGS/$name.log" | cut -c1-160)" > "$LOGS/$name.summary"
    fi
  fi
  echo "<== $name: ${STATUS[$name]} in ${ELAPSED[$name]} s$([ -s "$LOGS/$name.summary" ] && echo ": $(cat "$LOGS/$name.summary")")"
done

# ---------------------------------------------------------------------------------------------
# The results table.
R="$OUT/results.md"
# A table row with ours / theirs, or n/a unless both ran.
ratio_row() {
  if [ -n "$2" ] && [ -n "$3" ]; then
    echo "| $1 | $(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f×", a / b }') |"
  else
    echo "| $1 | n/a |"
  fi
}
{
  echo "# Longshot device harness"
  echo
  echo "- commit: $COMMIT"
  if [ "$gpu" = no ]; then
    echo "- device: none (no GPU: the GPU steps were skipped)"
  else
    echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 | grep . || echo "unknown (no nvidia-smi)")"
  fi
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); wall time $(since "$START") s of a ${BUDGET_S} s budget (step timeouts sum to ${total} s)"
  echo
  echo "| # | step | timeout (s) | elapsed (s) | status | result |"
  echo "|---:|---|---:|---:|---|---|"
  i=0
  for s in "${STEPS[@]}"; do
    name=${s%%:*}
    i=$((i + 1))
    res=$(cat "$LOGS/$name.summary" 2>/dev/null | tr '|' '/')
    echo "| $i | $name | ${LIMIT[$name]} | ${ELAPSED[$name]} | ${STATUS[$name]} | $res |"
  done
  echo
  echo "## Forward, Wan2.1-1.3B shape (480×832×81: 32 760 tokens, 512 text tokens)"
  echo
  echo "| implementation | result |"
  echo "|---|---|"
  echo "| diffusers + PyTorch (bf16, random weights) | $(cat "$LOGS/torch_forward.summary" 2>/dev/null || echo "${STATUS[torch_forward]}") |"
  echo "| Longshot GpuWanTransformer (bf16 GEMMs, f32 elsewhere) | $(cat "$LOGS/longshot_forward.summary" 2>/dev/null || echo "${STATUS[longshot_forward]}") |"
  ours=$(sed -nE 's/^RESULT wan_gpu_forward .* median_ms=([0-9.]+).*/\1/p' "$LOGS/longshot_forward.log" 2>/dev/null | tail -1)
  ratio_row "Longshot / diffusers (median)" "$ours" "$(torch_median "$LOGS/torch_forward.log")"
  echo
  echo "## VAE decode, Wan2.1 (latent 16×21×60×104 → 81 frames of 480×832)"
  echo
  echo "| implementation | result |"
  echo "|---|---|"
  echo "| diffusers AutoencoderKLWan + PyTorch (random weights) | $(cat "$LOGS/torch_vae_decode.summary" 2>/dev/null || echo "${STATUS[torch_vae_decode]}") |"
  echo "| Longshot GpuWanVaeDecoder (bf16 tensor-core convs, f32 activations; upload and download included) | $(cat "$LOGS/longshot_vae_decode.summary" 2>/dev/null || echo "${STATUS[longshot_vae_decode]}") |"
  r=$(grep -E '^RESULT wan_gpu_vae_decode' "$LOGS/longshot_vae_decode.log" 2>/dev/null | tail -1)
  ours=$(echo "$r" | sed -nE 's/.* median_ms=([0-9.]+).*/\1/p')
  down=$(echo "$r" | sed -nE 's/.* download_ms=([0-9.]+).*/\1/p')
  theirs=$(torch_median "$LOGS/torch_vae_decode.log")
  ratio_row "Longshot / diffusers (median)" "$ours" "$theirs"
  # diffusers leaves its frames on the device: the like-for-like figure drops Longshot's download.
  ratio_row "Longshot less its download / diffusers (median)" \
    "$([ -n "$ours" ] && [ -n "$down" ] && awk -v a="$ours" -v d="$down" 'BEGIN { print a - d }')" "$theirs"
  echo
  echo "## Kernels (gpu_kernels)"
  echo
  if grep -q '^| kernel' "$LOGS/gpu_kernels.log" 2>/dev/null; then
    grep -E '^(device|baseline):' "$LOGS/gpu_kernels.log"
    echo
    grep -E '^\|' "$LOGS/gpu_kernels.log"
  else
    echo "${STATUS[gpu_kernels]}"
  fi
  echo
  echo "## Parity tests"
  echo
  echo "| binary | result |"
  echo "|---|---|"
  for t in $PARITY render_1_vs_2; do
    echo "| $t | ${STATUS[$t]}$([ -s "$LOGS/$t.summary" ] && echo ": $(tr '|' '/' < "$LOGS/$t.summary")") |"
  done
  errs=$(grep -E ': [0-9]+ values' "$LOGS"/*.log 2>/dev/null | sed "s|^$LOGS/||; s|\.log:|: |")
  if [ -n "$errs" ]; then
    echo
    echo "Per-op errors (max relative error / bit-identity / ulps):"
    echo
    echo '```'
    echo "$errs"
    echo '```'
  fi
} > "$R"
tar -czf "$OUT/harness-logs.tar.gz" -C "$OUT" logs results.md
echo
cat "$R"
echo
echo "harness: results in $R, logs in $OUT/harness-logs.tar.gz ($(since "$START") s)"

failed=0
for s in "${STEPS[@]}"; do
  case "${STATUS[${s%%:*}]}" in ok* | "skipped: no GPU") ;; *) failed=1 ;; esac
done
exit $failed
