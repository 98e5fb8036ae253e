#!/usr/bin/env bash
# Renders a clip on a one-shot local cluster with the built-in procedural reference model.
# Installs the build prerequisites (protoc for etcd-client's code generation, nasm for OpenH264's
# assembly) when missing,
# then runs `longshot render` with the given arguments.
# Usage: scripts/render.sh --prompt "a slow red sunset over the sea" --duration 60 --workers 3 -o clip.mp4
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v nasm >/dev/null || need_apt+=(nasm)   # OpenH264's x86 assembly: several times faster MP4 encoding
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} (apt)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
export PROTOC="${PROTOC:-$(command -v protoc)}"
exec cargo run --release --locked -q -p longshot-cli -- render "$@"
