#!/usr/bin/env bash
# Installs what building (and, with `test`, testing) Longshot needs on Debian or Ubuntu, then checks
# that protoc can compile a file importing the protobuf well-known types, which etcd-client's build
# needs. The one list of system packages: scripts/render.sh and scripts/test.sh both call this.
# Usage: scripts/install-deps.sh build|test
set -euo pipefail

# protoc and the well-known types (google/protobuf/*.proto ship in libprotobuf-dev, not in
# protobuf-compiler) for etcd-client's code generation; nasm for OpenH264's x86 assembly.
BUILD_PACKAGES=(protobuf-compiler libprotobuf-dev nasm)
# The tests start a real etcd, Prometheus (promtool), ffmpeg/ffprobe; fresh-machine-check.sh builds
# a clean Debian root with debootstrap; image-check.sh builds the container image with podman on a
# debootstrap base (binutils: strip, objdump); deploy-check.sh runs helm (from npm) and
# kubernetes-validate (from PyPI) and node for the Prometheus-operator schemas; the network-partition
# test makes a network namespace and a veth pair (iproute2, as root); the review test loads
# `longshot review`'s HTML page in headless Chromium.
TEST_PACKAGES=(etcd-server ffmpeg prometheus debootstrap podman binutils iproute2 chromium)
# Node.js and npm (helm and kubectl come from an npm package; the Prometheus-operator CRD schemas
# too): Debian's packages, unless a node with npm is installed already (e.g. NodeSource's nodejs,
# which bundles npm and conflicts with Debian's npm package).
NODE_PACKAGES=(nodejs npm)

case "${1:-}" in
  build) packages=("${BUILD_PACKAGES[@]}") ;;
  test)
    packages=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then packages+=("${NODE_PACKAGES[@]}"); fi
    ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (apt)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # No recommends: every package needed is named above, so a missing name fails here, not on a user's machine.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "==> not a Debian/Ubuntu system: make sure these (or your system's equivalents) are installed: ${packages[*]}" >&2
fi

# etcd-client's build runs protoc on files that import google/protobuf/descriptor.proto: check that
# protoc finds it now, with a message that names the package, rather than fail deep in cargo's output.
protoc_bin="${PROTOC:-$(command -v protoc || true)}"
if [ -z "$protoc_bin" ]; then
  echo "error: protoc not found: install protobuf-compiler (Debian/Ubuntu) or set PROTOC" >&2
  exit 1
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cat >"$probe/check.proto" <<'PROTO'
syntax = "proto3";
import "google/protobuf/descriptor.proto";
message Check { google.protobuf.FileDescriptorProto file = 1; }
PROTO
if ! "$protoc_bin" -I "$probe" --descriptor_set_out=/dev/null "$probe/check.proto" 2>"$probe/err"; then
  echo "error: $protoc_bin cannot compile a file importing google/protobuf/descriptor.proto:" >&2
  sed 's/^/  /' "$probe/err" >&2
  echo "  the protobuf well-known types are missing: install libprotobuf-dev (Debian/Ubuntu) or protobuf-devel" >&2
  exit 1
fi
