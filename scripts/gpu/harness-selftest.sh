#!/usr/bin/env bash
# Runs the device harness (scripts/gpu/harness.sh) end to end on a machine without a GPU, twice,
# and checks what it wrote (scripts/test.sh runs this; no Rust build, a few seconds):
#   1. HARNESS_GPU=none: every GPU step is "skipped: no GPU", the table and the tarball exist and
#      name every step, exit status 0.
#   2. HARNESS_GPU=fake with stub binaries in a fake pack: a failing step (gpu_kernels), a step
#      that times out (gpu_denoise) and a step whose binary is missing (render_1_vs_2) are
#      recorded and the steps after them still run; the forward and VAE decode results are parsed
#      into the table with the Longshot/diffusers ratios; exit status 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
H=scripts/gpu/harness.sh
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
fail() {
  echo "harness-selftest: $*" >&2
  [ -f "$out/results.md" ] && cat "$out/results.md" >&2
  exit 1
}
steps=$(bash $H --list-steps | cut -d' ' -f1)
[ "$(echo "$steps" | wc -l)" -ge 10 ] || fail "--list-steps listed too few steps: $steps"
sum=$(bash $H --list-steps | awk '{ s += $2 } END { print s }')
[ "$sum" -le 480 ] || fail "step timeouts sum to $sum s, over 8 minutes"

# Row of `step` in the main table: | # | step | timeout | elapsed | status | result |
row() { grep -E "^\| [0-9]+ \| $1 \|" "$out/results.md" || fail "no row for $1"; }

echo "==> harness self-test 1: no GPU"
out=$tmp/out-none
mkdir -p "$tmp/pack-none"
rc=0
OUT=$out HARNESS_PACK=$tmp/pack-none HARNESS_GPU=none bash $H > "$tmp/none.log" 2>&1 || rc=$?
[ $rc = 0 ] || { cat "$tmp/none.log"; fail "exit status $rc without a GPU (expected 0)"; }
[ -s "$out/results.md" ] || fail "no results.md"
[ -s "$out/harness-logs.tar.gz" ] || fail "no harness-logs.tar.gz"
listing=$(tar tzf "$out/harness-logs.tar.gz")
echo "$listing" | grep -qx results.md || fail "results.md is not in the tarball"
for s in $steps; do
  echo "$listing" | grep -qx "logs/$s.log" || fail "the tarball has no logs/$s.log"
  r=$(row "$s")
  if [ "$s" = checks ]; then
    echo "$r" | grep -q "ok (no GPU)" || fail "checks row: $r"
  else
    echo "$r" | grep -q "skipped: no GPU" || fail "$s row does not say skipped: no GPU: $r"
    grep -q -- "$s: skipped: no GPU" "$tmp/none.log" || fail "$s did not print skipped: no GPU"
  fi
done
grep -q "^- device: none (no GPU" "$out/results.md" || fail "the table does not say there was no GPU"
[ "$(grep -c "| Longshot / diffusers (median) | n/a |" "$out/results.md")" = 2 ] ||
  fail "without a GPU the forward and VAE decode ratios should both be n/a"
grep -qE "<== checks: ok \(no GPU\) in [0-9.]+ s" "$tmp/none.log" || fail "no elapsed time printed for checks"

echo "==> harness self-test 2: fake GPU, stub binaries (a failure, a timeout, a missing binary)"
out=$tmp/out-fake
pack=$tmp/pack-fake
mkdir -p "$pack/bin"
stub() {
  printf '#!/usr/bin/env bash\n%s\n' "$2" > "$pack/bin/$1"
  chmod +x "$pack/bin/$1"
}
stub wan_gpu_forward 'echo "warm-up forward: 900.0 ms"; echo "RESULT wan_gpu_forward model=1.3b layers=30 tokens=32760 warmup_ms=900.0 timed=2 ms=800.0 median_ms=810.0 tflops=350.00"'
# The VAE bench must be given the harness's iteration count and a budget inside its timeout.
stub wan_gpu_vae_decode '[ "$LONGSHOT_VAE_BENCH_ITERS" = 2 ] && [ "$LONGSHOT_VAE_BENCH_BUDGET_S" -le 45 ] || { echo "bad env: $LONGSHOT_VAE_BENCH_ITERS $LONGSHOT_VAE_BENCH_BUDGET_S"; exit 1; }
echo "RESULT wan_gpu_vae_decode latent=21x16x60x104 frames=81 warmup_ms=9000.0 timed=2 ms=5900.0 median_ms=6000.0 download_ms=400.0"'
stub gpu_kernels 'echo "device: Fake (sm_90), 80.0 GiB"; echo "| kernel (1.3B shape) | µs | achieved | vs baseline |"; echo "|---|---|---|---|"; echo "| 3D RoPE | 10.0 | 3000 GB/s | 90% of copy |"; echo "| patchify | FAILED: boom | | |"; echo "RESULT gpu_kernels rows=2 failed=1"; exit 1'
stub gpu_denoise 'echo "test slow ... ok"; sleep 30'
for t in nvrtc_compile gpu_transformer gpu_vae gpu_nccl gpu_parity_core gpu_parity_models wan_gpu wan_gpu_vae worker_device; do
  stub $t 'echo "test a ... ok"; echo "test b ... ok"; echo "cfg_combine: 1000 values, bit-identical"; echo "test result: ok. 2 passed; 0 failed"'
done
# The torch steps run the harness's own scripts: a fake torch and diffusers answer them (the VAE
# script's import of torch_wan_forward imports the fake diffusers too).
mkdir -p "$tmp/fakepy/diffusers/utils"
cat > "$tmp/fakepy/torch.py" <<'PY'
__version__ = "0.0-fake"
bfloat16 = float32 = "dtype"
PY
cat > "$tmp/fakepy/diffusers/__init__.py" <<'PY'
import json, sys
__version__ = "0.0-fake"
# Stands in for the whole script: print its result line and stop.
if sys.argv[0].endswith("torch_wan_vae_decode.py"):
    # The harness passes the VAE script a budget inside its 55 s timeout.
    budget = float(sys.argv[sys.argv.index("--budget-s") + 1]) if "--budget-s" in sys.argv else 0.0
    assert "--config" in sys.argv or 0 < budget <= 55, sys.argv
    print(json.dumps({"warmup_ms": [9500.0], "ms_median": 8000.0, "ms_all": [7900.0, 8100.0],
                      "dtype": "float32", "tf32_conv": True, "to_host_ms": 150.0, "finite": True,
                      "versions": {"torch": "fake", "diffusers": "fake"}}))
    sys.exit(0)
print(json.dumps({"warmup_ms": [1500.0], "ms_median": 405.0, "ms_all": [400.0, 410.0],
                  "sdpa": {"backend": "flash", "kernels": ["pytorch_flash::flash_fwd_kernel"]},
                  "versions": {"torch": "fake", "diffusers": "fake"}}))
sys.exit(0)
PY
rc=0
OUT=$out HARNESS_PACK=$pack HARNESS_GPU=fake HARNESS_TIMEOUT_gpu_denoise=2 PYTHONPATH=$tmp/fakepy \
  LONGSHOT_WAN_FIXTURES=$tmp/no-fixtures bash $H > "$tmp/fake.log" 2>&1 || rc=$?
[ $rc = 1 ] || { cat "$tmp/fake.log"; fail "exit status $rc with failing steps (expected 1)"; }
row torch_forward | grep -q "| ok | median 405.0 ms of 2 timed, warm-up 1500.0 ms, SDPA backend: flash" ||
  fail "torch_forward row: $(row torch_forward)"
row longshot_forward | grep -q "| ok | median 810.0 ms of 2 timed, warm-up 900.0 ms, 350.00 TFLOP/s" ||
  fail "longshot_forward row: $(row longshot_forward)"
grep -q "| Longshot / diffusers (median) | 2.00× |" "$out/results.md" || fail "no ratio in the forward table"
row torch_vae_decode | grep -q "| ok | median 8000.0 ms of 2 timed, warm-up 9500.0 ms, float32 (TF32 convs on), to host 150.0 ms, torch fake" ||
  fail "torch_vae_decode row: $(row torch_vae_decode)"
row longshot_vae_decode | grep -q "| ok | median 6000.0 ms of 2 timed, warm-up 9000.0 ms, of which the download to the host 400.0 ms" ||
  fail "longshot_vae_decode row: $(row longshot_vae_decode)"
grep -q "^## VAE decode" "$out/results.md" || fail "no VAE decode table"
grep -q "| Longshot / diffusers (median) | 0.75× |" "$out/results.md" || fail "no ratio in the VAE decode table"
grep -q "| Longshot less its download / diffusers (median) | 0.70× |" "$out/results.md" ||
  fail "no download-less ratio in the VAE decode table"
[ -s "$out/logs/torch_vae_decode.smoke.log" ] || fail "the VAE script's CPU smoke test did not run"
row gpu_kernels | grep -q "FAILED (exit 1) | 2 rows, 1 failed" || fail "gpu_kernels row: $(row gpu_kernels)"
grep -q "^| patchify | FAILED: boom" "$out/results.md" || fail "the kernel table lost the failed row"
row gpu_denoise | grep -q "TIMEOUT after 2 s | 1 passed, 0 failed before it stopped" ||
  fail "gpu_denoise row: $(row gpu_denoise)"
row gpu_transformer | grep -q "| ok | 2 passed, 0 failed, 0 ignored" || fail "the step after the timeout did not run"
row render_1_vs_2 | grep -q "FAILED (exit 1) | bin/longshot is not in the pack" || fail "render row: $(row render_1_vs_2)"
grep -q "cfg_combine: 1000 values, bit-identical" "$out/results.md" || fail "no per-op errors section"
grep -qE "<== gpu_denoise: TIMEOUT after 2 s in [0-9.]+ s" "$tmp/fake.log" || fail "no elapsed time for the timeout"
tar tzf "$out/harness-logs.tar.gz" > "$tmp/tarball.list"  # not piped into grep -q: tar would die of SIGPIPE
grep -qx logs/gpu_kernels.log "$tmp/tarball.list" || fail "the tarball lacks gpu_kernels.log"
echo "harness self-test: ok (no-GPU run and fake-GPU run)"
