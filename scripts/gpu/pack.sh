#!/usr/bin/env bash
# Builds the CUDA test binaries here and packs them into .device-pack/ (git-ignored) for the
# device machine, which has a GPU and Python's NVIDIA packages but no Rust toolchain.
#   here:    scripts/gpu/pack.sh
#   device:  copy .device-pack/ over, then `bash .device-pack/run.sh`
# run.sh puts the CUDA libraries of the pip packages (nvrtc, cublas/cublasLt, nccl, cuda_runtime)
# on LD_LIBRARY_PATH, runs the NVRTC compile check and the GPU parity tests, and prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=.device-pack
export PROTOC="${PROTOC:-$(command -v protoc || true)}"

rm -rf "$PACK"
mkdir -p "$PACK/bin" "$PACK/kernels/cuda"

echo "==> building the kernels crate's tests with --features cuda (release)"
cargo test --release --locked -p longshot-kernels --features cuda --no-run --message-format=json \
  > "$PACK/build.json"
python3 - "$PACK" <<'PY'
import json, shutil, sys, os
pack = sys.argv[1]
wanted = {"nvrtc_compile", "gpu_parity"}
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
LIBS=$(python3 - <<'PY'
import os, glob
try:
    import nvidia
except ImportError:
    raise SystemExit("")
dirs = []
for root in nvidia.__path__:
    dirs += glob.glob(os.path.join(root, "*", "lib"))      # nvidia/<package>/lib
    dirs += glob.glob(os.path.join(root, "cu13", "lib"))    # nvidia/cu13/lib (CUDA 13 wheels)
print(":".join(sorted(set(d for d in dirs if os.path.isdir(d)))))
PY
)
if [ -z "$LIBS" ]; then
  echo "run.sh: python3 has no 'nvidia' packages; install nvidia-cuda-nvrtc (13.0 line) and nvidia-cublas" >&2
fi
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LONGSHOT_KERNEL_CACHE="${LONGSHOT_KERNEL_CACHE:-$PWD/kernel-cache}"
export LONGSHOT_KERNEL_SOURCES="$PWD/kernels/cuda"
echo "commit $(cat COMMIT)$( [ -s DIRTY ] && echo ' (with uncommitted changes)')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
mkdir -p logs
status=0
for t in nvrtc_compile gpu_parity; do
  echo "==> $t"
  ./bin/$t --test-threads=1 --show-output > "logs/$t.log" 2>&1 || status=1
  grep -E '^test .* \.\.\. |^test result' "logs/$t.log" || tail -20 "logs/$t.log"
done
echo
printf '%-16s %-64s %s\n' BINARY TEST RESULT
for t in nvrtc_compile gpu_parity; do
  sed -nE 's/^test (.*) \.\.\. (ok|FAILED|ignored)$/\1 \2/p' "logs/$t.log" | while read -r name res; do
    printf '%-16s %-64s %s\n' "$t" "$name" "$res"
  done
done
echo
echo "per-op errors (max relative error / bit-identity):"
grep -hE ': [0-9]+ values' logs/*.log || true
echo "full logs: $(pwd)/logs"
exit $status
RUN
chmod +x "$PACK/run.sh"
echo "==> packed into $PACK/ ($(du -sh "$PACK" | cut -f1)); on the device: bash $PACK/run.sh"
