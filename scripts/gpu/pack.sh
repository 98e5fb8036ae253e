#!/usr/bin/env bash
# Builds the CUDA test binaries here and packs them into .device-pack/ (git-ignored) for the
# device machine, which has a GPU and Python's NVIDIA packages but no Rust toolchain.
#   here:    scripts/gpu/pack.sh
#   device:  the device tool's `run` with command `bash .device-pack/run.sh` and carry
#            [".device-pack"] (the pack is git-ignored; it travels inside the repository's tree)
# run.sh puts the CUDA libraries of the pip packages (nvrtc, cublas/cublasLt, nccl, cuda_runtime)
# on LD_LIBRARY_PATH (and links libnccl.so, the name cudarc opens, to pip's libnccl.so.2), runs
# the NVRTC compile check, the GPU parity tests, the single-rank NCCL test and the GPU Wan2.1
# transformer against the CPU one, then the benchmarks (kernel bandwidth / TFLOP/s, one
# Wan2.1-1.3B-shaped forward) and diffusers + PyTorch's forward on the same device for the ratio,
# and prints tables. Set QUICK=1 on the device for a 2-layer forward bench only.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=.device-pack
scripts/install-deps.sh build
export PROTOC="${PROTOC:-$(command -v protoc)}"

rm -rf "$PACK"
mkdir -p "$PACK/bin" "$PACK/kernels/cuda" "$PACK/wheels" "$PACK/scripts"

echo "==> building the GPU test binaries with --features cuda (release)"
# kernels: NVRTC compile check + parity against kernels::cpu + the single-rank NCCL test;
# longshot-tests: parity against the real references in core and models.
cargo test --release --locked -p longshot-kernels --features cuda --no-run --message-format=json \
  > "$PACK/build.json"
cargo test --release --locked -p longshot-tests --features cuda \
  --test gpu_parity_core --test gpu_parity_models --no-run --message-format=json \
  >> "$PACK/build.json"
# models: the GPU Wan2.1 transformer and VAE decoder against the CPU ones; benches: kernels and
# one forward.
cargo test --release --locked -p longshot-models --features cuda --test wan_gpu --test wan_gpu_vae --no-run \
  --message-format=json >> "$PACK/build.json"
cargo bench --locked -p longshot-models --features cuda --bench wan_gpu_forward --no-run \
  --message-format=json >> "$PACK/build.json"
cargo bench --locked -p longshot-kernels --features cuda --bench gpu_kernels --no-run \
  --message-format=json >> "$PACK/build.json"
# The worker's device selection (a GPU must be taken there) and the CLI itself, for the
# 1-vs-2-worker bit-identity check of a tiny Wan2.1 render on the GPU.
cargo test --release --locked -p longshot-worker --features cuda --lib --no-run \
  --message-format=json >> "$PACK/build.json"
cargo build --release --locked -p longshot-cli --features cuda --message-format=json >> "$PACK/build.json"
python3 - "$PACK" <<'PY'
import json, shutil, subprocess, sys, os
pack = sys.argv[1]
wanted = {"nvrtc_compile", "gpu_denoise", "gpu_transformer", "gpu_vae", "gpu_nccl",
          "gpu_parity_core", "gpu_parity_models", "wan_gpu", "wan_gpu_vae", "wan_gpu_forward", "gpu_kernels",
          "longshot_worker", "longshot"}
found = set()
for line in open(os.path.join(pack, "build.json")):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    name = msg["target"]["name"]
    kind = msg["target"]["kind"]
    is_test = msg.get("profile", {}).get("test", False)
    if name in wanted and (kind in (["test"], ["bench"]) or (kind == ["lib"] and is_test) or kind == ["bin"]):
        dst = os.path.join(pack, "bin", "worker_device" if name == "longshot_worker" else name)
        shutil.copy2(msg["executable"], dst)
        # Debug info and symbols would push the pack past the device tool's 64 MiB carry limit.
        subprocess.run(["strip", "--strip-all", dst], check=True)
        found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"pack: no test executable for {sorted(missing)}")
PY
rm "$PACK/build.json"
# The sources are embedded in the binaries; the copies are for reading and for diffing on the device.
cp kernels/cuda/*.cu kernels/cuda/*.cuh "$PACK/kernels/cuda/"
# diffusers is not on the device machine: carry its wheel (and the one dependency it lacks there).
cp scripts/gpu/torch_wan_forward.py "$PACK/scripts/"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$PACK/wheels" diffusers==0.42.1 'importlib_metadata<9'
git rev-parse HEAD > "$PACK/COMMIT" 2>/dev/null || echo unknown > "$PACK/COMMIT"
git status --porcelain > "$PACK/DIRTY" 2>/dev/null || true

cat > "$PACK/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the packed GPU checks on the device machine and prints a results table.
set -uo pipefail
cd "$(dirname "$0")"
TESTS="nvrtc_compile gpu_denoise gpu_transformer gpu_vae gpu_nccl gpu_parity_core gpu_parity_models wan_gpu wan_gpu_vae worker_device"
# The pack travels inside the repository's working tree, which holds the Wan fixtures.
export LONGSHOT_WAN_FIXTURES="$(cd .. && pwd)/models/tests/fixtures/wan"
[ -d "$LONGSHOT_WAN_FIXTURES" ] || echo "run.sh: no $LONGSHOT_WAN_FIXTURES (run the pack from inside the repository)" >&2
LIBS=$(python3 - <<'PY'
import os, glob, site, sys
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
if [ -z "$LIBS" ]; then
  echo "run.sh: python3 has no 'nvidia' packages; install nvidia-cuda-nvrtc (13.0 line), nvidia-cublas and nvidia-nccl-cu13" >&2
fi
# cudarc opens libnccl.so (or libnccl.so.13, ...); pip's nvidia-nccl ships libnccl.so.2 only.
NCCL=""
IFS=: read -ra LIBDIRS <<< "$LIBS"
for d in "${LIBDIRS[@]}"; do
  for f in "$d"/libnccl.so "$d"/libnccl.so.2; do
    if [ -z "$NCCL" ] && [ -e "$f" ]; then NCCL="$f"; fi
  done
done
mkdir -p lib-links
rm -f lib-links/libnccl.so
if [ -n "$NCCL" ]; then
  ln -s "$NCCL" lib-links/libnccl.so
  echo "NCCL: $NCCL (linked as lib-links/libnccl.so)"
else
  echo "run.sh: no libnccl.so.2 in the pip packages (pip install nvidia-nccl-cu13): gpu_nccl will fail" >&2
fi
export LD_LIBRARY_PATH="$PWD/lib-links${LIBS:+:$LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LONGSHOT_KERNEL_CACHE="${LONGSHOT_KERNEL_CACHE:-$PWD/kernel-cache}"
export LONGSHOT_KERNEL_SOURCES="$PWD/kernels/cuda"
echo "commit $(cat COMMIT)$( [ -s DIRTY ] && echo ' (with uncommitted changes)')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
mkdir -p logs
status=0
for t in $TESTS; do
  echo "==> $t"
  ./bin/$t --test-threads=1 --show-output > "logs/$t.log" 2>&1 || status=1
  grep -E '^test .* \.\.\. |^test result' "logs/$t.log" || tail -20 "logs/$t.log"
done
echo
printf '%-20s %-72s %s\n' BINARY TEST RESULT
for t in $TESTS; do
  if ! grep -qE '^test result' "logs/$t.log"; then
    printf '%-20s %-72s %s\n' "$t" "(binary did not finish: see logs/$t.log)" FAILED
  fi
  sed -nE 's/^test (.*) \.\.\. (ok|FAILED|ignored)$/\1 \2/p' "logs/$t.log" | while read -r name res; do
    printf '%-20s %-72s %s\n' "$t" "$name" "$res"
  done
done
echo
echo "per-op errors (max relative error / bit-identity / ulps):"
grep -hE ': [0-9]+ values' logs/*.log || true

echo
echo "==> a tiny Wan2.1 render on the GPU: 1 vs 2 worker processes sharing the device must give the same bits"
tiny=$PWD/tiny-wan; rm -rf "$tiny"; mkdir -p "$tiny"
for c in transformer vae scheduler; do cp -r "$LONGSHOT_WAN_FIXTURES/pipeline_tiny/$c" "$tiny/"; done
for c in text_encoder tokenizer; do cp -r "$LONGSHOT_WAN_FIXTURES/umt5_tiny/$c" "$tiny/"; done
cat > "$tiny/model_index.json" <<'JSON'
{"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
 "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
 "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
JSON
render_ok=1
for n in 1 2; do
  ./bin/longshot render --model "$tiny" --prompt "a lighthouse at dusk" --frames 197 --width 48 --height 32 \
    --steps 3 --seed 7 --workers $n --logs logs/render-$n -o render-$n.safetensors > logs/render-$n.log 2>&1 \
    || { render_ok=0; tail -5 logs/render-$n.log; }
done
grep -h "transformer on" logs/render-*/worker-*.log 2>/dev/null
# Whether the workers found NCCL (informational: two workers on one GPU exchange over TCP, since
# NCCL refuses two ranks on one device; multi-rank NCCL needs two GPUs and has not run here).
grep -h "NCCL\|overlaps go over TCP" logs/render-2/worker-*.log 2>/dev/null | head -2
if grep -qh "transformer on cpu" logs/render-*/worker-*.log 2>/dev/null; then
  echo "the render's workers ran the transformer on the CPU, not the GPU"; render_ok=0
fi
if [ $render_ok = 1 ] && python3 - <<'PY'
from safetensors.numpy import load_file
a, b = load_file("render-1.safetensors")["latents"], load_file("render-2.safetensors")["latents"]
same = a.shape == b.shape and a.tobytes() == b.tobytes()
print(f"GPU render latents {a.shape}: 1 vs 2 workers {'bit-identical' if same else 'DIFFER'}")
raise SystemExit(0 if same else 1)
PY
then echo "gpu_render_1_vs_2_workers ok"; else echo "gpu_render_1_vs_2_workers FAILED"; status=1; fi

echo
echo "==> gpu_kernels (memory-bound kernels vs the device's copy bandwidth; GEMM and attention TFLOP/s)"
./bin/gpu_kernels 2>&1 | tee logs/gpu_kernels.log || status=1
layers=""; [ "${QUICK:-0}" = 1 ] && layers=2
echo "==> wan_gpu_forward (one Wan2.1-1.3B-shaped forward, 480x832x81${layers:+, $layers layers})"
if [ -n "$layers" ]; then export LONGSHOT_WAN_BENCH_LAYERS=$layers; fi
./bin/wan_gpu_forward 2>&1 | tee logs/wan_gpu_forward.log || status=1
echo "==> diffusers + PyTorch, same device, same shapes (the baseline)"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/longshot-site wheels/*.whl \
  && PYTHONPATH=/tmp/longshot-site python3 scripts/torch_wan_forward.py --config 1.3b \
     ${layers:+--layers $layers} 2>&1 | tee logs/torch_wan_forward.log || status=1
ours=$(sed -nE 's/^RESULT wan_gpu_forward .* median_ms=([0-9.]+).*/\1/p' logs/wan_gpu_forward.log)
theirs=$(python3 -c 'import json,sys; print(json.loads(open("logs/torch_wan_forward.log").read().strip().splitlines()[-1])["ms_median"])' 2>/dev/null)
echo
echo "| forward (1.3B shape, 480x832x81) | median ms |"
echo "|---|---|"
echo "| Longshot GpuWanTransformer | ${ours:-n/a} |"
echo "| diffusers + PyTorch (bf16, SDPA) | ${theirs:-n/a} |"
if [ -n "$ours" ] && [ -n "$theirs" ]; then
  python3 -c "print(f'| Longshot / diffusers | {float(\"$ours\") / float(\"$theirs\"):.2f}x |')"
fi
echo "full logs: $(pwd)/logs"
exit $status
RUN
chmod +x "$PACK/run.sh"
# The device tool carries the pack together with the repository's tracked files: 64 MiB in all.
size_mb=$(( ( $(du -sb "$PACK" | cut -f1) + $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) ) >> 20 ))
echo "==> packed into $PACK/ (with the repository: ${size_mb} MiB); on the device: bash $PACK/run.sh"
if [ "$size_mb" -gt 60 ]; then
  echo "pack.sh: the pack and the repository come to ${size_mb} MiB, too close to the device tool's 64 MiB carry limit" >&2
  exit 1
fi
