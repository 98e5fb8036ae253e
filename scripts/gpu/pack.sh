#!/usr/bin/env bash
# Builds the CUDA test binaries here and packs them into .device-pack/ (git-ignored) for the
# device machine, which has a GPU, CUDA 13 Python wheels and PyTorch, but no Rust toolchain and
# no network. Two commands in all:
#   here:    scripts/gpu/pack.sh
#   device:  the device tool's `run` with command `bash .device-pack/run.sh`, carry
#            [".device-pack"] (the pack is git-ignored; it travels inside the repository's tree)
#            and timeout_s 540; the harness itself stays under 8 minutes.
# run.sh runs scripts/gpu/harness.sh (copied into the pack): library checks, the diffusers
# baselines and Longshot's counterparts (the Wan2.1-1.3B forward, the Wan2.1 VAE decode), the
# kernel table, the parity tests and a 1-vs-2-worker render, each under its own timeout, and writes $OUT/results.md and $OUT/harness-logs.tar.gz
# (the device tool copies $OUT back). QUICK=1 on the device: 2-layer forwards, 17-frame decodes.
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
# models: the GPU Wan2.1 transformer and VAE decoder against the CPU ones; benches: kernels, one
# forward and one VAE decode.
cargo test --release --locked -p longshot-models --features cuda --test wan_gpu --test wan_gpu_vae --no-run \
  --message-format=json >> "$PACK/build.json"
cargo bench --locked -p longshot-models --features cuda --bench wan_gpu_forward --bench wan_gpu_vae_decode --no-run \
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
          "gpu_parity_core", "gpu_parity_models", "wan_gpu", "wan_gpu_vae", "wan_gpu_forward", "wan_gpu_vae_decode", "gpu_kernels",
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
cp scripts/gpu/torch_wan_forward.py scripts/gpu/torch_wan_vae_decode.py "$PACK/scripts/"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$PACK/wheels" diffusers==0.42.1 'importlib_metadata<9'
git rev-parse HEAD > "$PACK/COMMIT" 2>/dev/null || echo unknown > "$PACK/COMMIT"
git status --porcelain > "$PACK/DIRTY" 2>/dev/null || true

# run.sh is the one command on the device: the harness (scripts/gpu/harness.sh) does the rest.
cp scripts/gpu/harness.sh scripts/gpu/probe_libs.py "$PACK/scripts/"
cat > "$PACK/run.sh" <<'RUN'
#!/usr/bin/env bash
# Every device check in one call of at most 8 minutes: start-up checks, the diffusers baselines
# and Longshot's forward and VAE decode, the kernel table, the parity tests. Writes $OUT/results.md and
# $OUT/harness-logs.tar.gz. See scripts/harness.sh for the steps and their timeouts.
exec bash "$(dirname "$0")/scripts/harness.sh" "$@"
RUN
chmod +x "$PACK/run.sh"
# The device tool carries the pack together with the repository's tracked files: 64 MiB in all.
size_mb=$(( ( $(du -sb "$PACK" | cut -f1) + $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) ) >> 20 ))
echo "==> packed into $PACK/ (with the repository: ${size_mb} MiB); on the device: bash $PACK/run.sh"
if [ "$size_mb" -gt 60 ]; then
  echo "pack.sh: the pack and the repository come to ${size_mb} MiB, too close to the device tool's 64 MiB carry limit" >&2
  exit 1
fi
