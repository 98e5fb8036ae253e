#!/usr/bin/env bash
# Runs Longshot's whole test suite on a fresh Debian/Ubuntu machine.
# Installs what the tests need (scripts/install-deps.sh: protoc and the protobuf well-known types,
# nasm, etcd, ffmpeg/ffprobe, Prometheus, debootstrap, podman, Chromium, node/npm; NVRTC, cuobjdump and nvdisasm
# from PyPI; helm, kubectl and the manifest validators into .deploy-tools/), checks formatting (cargo
# fmt) and lints (clippy -D warnings, also with the CUDA backend), then builds and runs every test
# in release mode, checks the Helm chart (scripts/deploy-check.sh) and the container image
# (scripts/image-check.sh), fuzzes every parser of untrusted bytes briefly (scripts/fuzz.sh), and
# last checks the README's two commands on a clean Debian root
# (scripts/fresh-machine-check.sh).
# Usage: scripts/test.sh [--install-only] [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

install_only=false
if [ "${1:-}" = "--install-only" ]; then install_only=true; shift; fi

scripts/install-deps.sh test
export PROTOC="${PROTOC:-$(command -v protoc)}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# NVRTC for the kernel compile check, pinned to the CUDA 13.0 line of the device machine's driver,
# and cuobjdump + nvdisasm for the SASS check (13.2 is their oldest CUDA 13 wheel; they read sm_90
# CUBINs of any 13.x NVRTC), installed into a repo-local, git-ignored directory (never into the
# system site-packages). One pip call: `pip --target` does not merge into an existing nvidia/.
NVRTC_DIR="$PWD/.nvrtc"
if ! ls "$NVRTC_DIR"/nvidia/cu13/lib/libnvrtc.so.13 "$NVRTC_DIR"/nvidia/cu13/bin/cuobjdump \
  "$NVRTC_DIR"/nvidia/cu13/bin/nvdisasm >/dev/null 2>&1; then
  echo "==> installing nvidia-cuda-nvrtc==13.0.*, nvidia-cuda-cuobjdump/nvdisasm==13.2.* (pip) into .nvrtc/"
  rm -rf "$NVRTC_DIR"
  python3 -m pip install --quiet --target "$NVRTC_DIR" 'nvidia-cuda-nvrtc==13.0.*' \
    'nvidia-cuda-cuobjdump==13.2.*' 'nvidia-cuda-nvdisasm==13.2.*'
fi
export LD_LIBRARY_PATH="$NVRTC_DIR/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# rustfmt and clippy come with rustup's default profile; a minimal toolchain lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "==> rustup component add rustfmt clippy"
  rustup component add rustfmt clippy
fi
# helm v4, kubectl, kubernetes-validate and the Prometheus-operator schemas, pinned, into the
# repo-local, git-ignored .deploy-tools/ (scripts/deploy-check.sh uses them).
scripts/deploy-tools.sh >/dev/null
if $install_only; then
  echo "==> everything the tests need is installed"
  exit 0
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

# Clippy with and without the CUDA backend: the cuda-gated code is compiled (not run) here too.
CUDA_FEATURES=longshot-kernels/cuda,longshot-models/cuda,longshot-worker/cuda,longshot-tests/cuda,longshot-cli/cuda
echo "==> cargo clippy -D warnings (default features, then --features cuda)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo clippy --release --locked --workspace --all-targets --features "$CUDA_FEATURES" -- -D warnings

# The alert rules (shipped by the Helm chart) and their unit tests (promtool from Debian's prometheus package); the dashboard's
# and the rules' expressions run against a real Prometheus in cli/tests/metrics.rs.
echo "==> promtool check rules / test rules (helm/longshot/files/rules/)"
promtool check rules helm/longshot/files/rules/longshot-alerts.yml
promtool test rules helm/longshot/files/rules/longshot-alerts.test.yml

echo "==> cargo test --workspace --release"
cargo test --workspace --release --locked "$@"

echo "==> NVRTC compile check of every CUDA kernel source (sm_90, no GPU needed)"
cargo test --release --locked -p longshot-kernels --features cuda --test nvrtc_compile

# The kernel cache's trust rules (corrupt/foreign entries, load failures, racing writers): the
# compile and load steps are injected, so no GPU and no NVRTC are needed.
echo "==> kernel cache checks (no GPU needed)"
cargo test --release --locked -p longshot-kernels --features cuda --test kernel_cache

# The device harness end to end with its GPU steps skipped, and with stub binaries for a failing,
# a timed-out and a missing step (scripts/gpu/harness-selftest.sh; seconds, no build).
echo "==> device harness self-test (no GPU)"
scripts/gpu/harness-selftest.sh

# The attention kernels' SASS: tensor cores (HMMA), cp.async and ldmatrix, no stack, no spills.
echo "==> SASS check of the attention kernels (NVRTC + cuobjdump, no GPU needed)"
cargo test --release --locked -p longshot-kernels --features cuda --test sass

# The GPU tests need a device to run (scripts/gpu/pack.sh carries them to one), but they must
# keep compiling: parity against core's and models' references, with the CUDA backend on.
echo "==> building the GPU parity tests and benchmarks (not run: they need a GPU)"
cargo build --release --locked -p longshot-tests -p longshot-kernels -p longshot-models \
  --features longshot-tests/cuda,longshot-kernels/cuda,longshot-models/cuda --tests --benches

# With CUDA support built in and no GPU here: `--device auto` falls back to the CPU and
# `--device cuda` refuses, without a panic (on a GPU machine the same test checks the GPU is taken).
echo "==> worker device selection with CUDA support built in"
cargo test --release --locked -p longshot-worker --features cuda --lib device

# The Helm chart, rendered and checked with the real helm, the Kubernetes schemas and promtool.
echo "==> the Helm chart (scripts/deploy-check.sh)"
scripts/deploy-check.sh

# Every parser of untrusted bytes under libFuzzer for a short while (longer runs: scripts/fuzz.sh 600).
echo "==> fuzzing every parser of untrusted bytes, 20 s each (scripts/fuzz.sh)"
scripts/fuzz.sh 20

# The container image, built with the CUDA-enabled binary (most of it is built by the steps
# above) and run in its exported filesystem with chroot.
echo "==> the container image (cargo build --features cuda, then scripts/image-check.sh)"
cargo build --release --locked -p longshot-cli --features cuda
scripts/image-check.sh --binary target/release/longshot

# The README's commands on a clean Debian 12 root: a missing install step fails here, not on a
# new user's machine.
echo "==> the README's commands on a fresh Debian root (scripts/fresh-machine-check.sh)"
scripts/fresh-machine-check.sh
