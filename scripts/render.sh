#!/usr/bin/env bash
# Renders a clip on a one-shot local cluster with the built-in procedural reference model.
# Installs the build prerequisites when missing (scripts/install-deps.sh: protoc and the protobuf
# well-known types for etcd-client's code generation, nasm for OpenH264's assembly), then runs
# `longshot render` with the given arguments.
# Usage: scripts/render.sh --prompt "a slow red sunset over the sea" --duration 60 --workers 3 -o clip.mp4
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
export PROTOC="${PROTOC:-$(command -v protoc)}"
exec cargo run --release --locked -q -p longshot-cli -- render "$@"
