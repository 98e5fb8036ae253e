#!/usr/bin/env bash
# Builds the CUDA test binaries here and packs them into .device-pack/ (git-ignored) for the
# device machine, which has a GPU and Python's NVIDIA packages but no Rust toolchain.
#   here:    scripts/gpu/pack.sh
#   device:  copy .device-pack/ over, then `bash .device-pack/run.sh`
# run.sh puts the CUDA libraries of the pip packages (nvrtc, cublas/cublasLt, nccl, cuda_runtime)
# on LD_LIBRARY_PATH (and links libnccl.so, the name cudarc opens, to pip's libnccl.so.2), runs
# the NVRTC compile check, the GPU parity tests and the single-rank NCCL test, and prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=.device-pack
export PROTOC="${PROTOC:-$(command -v protoc || true)}"

rm -rf "$PACK"
mkdir -p "$PACK/bin" "$PACK/kernels/cuda"

echo "==> building the GPU test binaries with --features cuda (release)"
# kernels: NVRTC compile check + parity against kernels::cpu + the single-rank NCCL test;
# longshot-tests: parity against the real references in core and models.
cargo test --release --locked -p longshot-kernels --features cuda --no-run --message-format=json \
  > "$PACK/build.json"
cargo test --release --locked -p longshot-tests --features cuda \
  --test gpu_parity_core --test gpu_parity_models --no-run --message-format=json \
  >> "$PACK/build.json"
python3 - "$PACK" <<'PY'
import json, shutil, sys, os
pack = sys.argv[1]
wanted = {"nvrtc_compile", "gpu_denoise", "gpu_transformer", "gpu_vae", "gpu_nccl",
          "gpu_parity_core", "gpu_parity_models"}
found = set()
for line in open(os.path.join(pack, "build.json")):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    name = msg["target"]["name"]
    if name in wanted and msg["target"]["kind"] == ["test"]:
        shutil.copy2(msg["executable"], os.path.join(pack, "bin", name))
        found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"pack: no test executable for {sorted(missing)}")
PY
rm "$PACK/build.json"
# The sources are embedded in the binaries; the copies are for reading and for diffing on the device.
cp kernels/cuda/*.cu kernels/cuda/*.cuh "$PACK/kernels/cuda/"
git rev-parse HEAD > "$PACK/COMMIT" 2>/dev/null || echo unknown > "$PACK/COMMIT"
git status --porcelain > "$PACK/DIRTY" 2>/dev/null || true

cat > "$PACK/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the packed GPU checks on the device machine and prints a results table.
set -uo pipefail
cd "$(dirname "$0")"
TESTS="nvrtc_compile gpu_denoise gpu_transformer gpu_vae gpu_nccl gpu_parity_core gpu_parity_models"
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
echo "full logs: $(pwd)/logs"
exit $status
RUN
chmod +x "$PACK/run.sh"
echo "==> packed into $PACK/ ($(du -sh "$PACK" | cut -f1)); on the device: bash $PACK/run.sh"
