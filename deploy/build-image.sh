#!/usr/bin/env bash
# Builds the Longshot container image from deploy/Containerfile.
#
# Rust is not built inside the image build (offline builders, and a release build is long): the
# binary is built here, release with --features cuda, and copied in. It links against this
# machine's glibc, so build on a machine whose glibc is no newer than the base image's (Debian 12
# bookworm: 2.36); the Containerfile runs `longshot --version` on the base and fails if not.
#
# The build context is prepared in .deploy-cache/image-context/ (git-ignored): the stripped
# binary, and cuda/ with the .so files of the pinned NVIDIA wheels of deploy/cuda-libs.txt
# (downloaded once into .deploy-cache/wheels/): NVRTC and its builtins, cuBLASLt, NCCL.
#
# Usage: deploy/build-image.sh [--tag IMAGE] [--base IMAGE] [--binary PATH] [--engine podman|docker]
#                              [-- EXTRA BUILD ARGS]
#   --tag     image name (default: localhost/longshot:<version>)
#   --base    base image (Containerfile's ARG BASE; default docker.io/library/debian:bookworm-slim)
#   --binary  a longshot built with --features cuda (default: build it now)
#   --engine  podman (default when installed) or docker
# Then push:  podman push IMAGE   (or docker push IMAGE)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="" base="" binary="" engine=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
extra=("$@")

if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else echo "build-image.sh: neither podman nor docker is installed" >&2; exit 1; fi
fi
command -v "$engine" >/dev/null || { echo "build-image.sh: $engine is not installed" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "build-image.sh: the pinned CUDA wheels are x86_64 only" >&2; exit 1; }

if [ -z "$binary" ]; then
  scripts/install-deps.sh build
  export PROTOC="${PROTOC:-$(command -v protoc)}"
  echo "==> cargo build --release --locked -p longshot-cli --features cuda"
  cargo build --release --locked -p longshot-cli --features cuda
  binary=target/release/longshot
fi
[ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 1; }

cache=.deploy-cache
ctx=$cache/image-context
wheels=$cache/wheels
mkdir -p "$wheels"
if ! python3 -m pip download --quiet --no-deps --require-hashes -d "$wheels" -r deploy/cuda-libs.txt; then
  echo "build-image.sh: cannot download the CUDA wheels of deploy/cuda-libs.txt" >&2
  exit 1
fi

rm -rf "$ctx"
mkdir -p "$ctx/cuda"
cp deploy/Containerfile "$ctx/Containerfile"
# Debug info (profile.release has debug = 1) would add ~100 MB; the dynamic symbols stay.
strip --strip-debug -o "$ctx/longshot" "$binary"
python3 - "$wheels" "$ctx/cuda" <<'PY'
import glob, os, re, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
# What cudarc dlopens (libnvrtc.so.13, libcublasLt.so.13, libnccl.so*) and what they load.
want = re.compile(r"nvidia/(cu13|nccl)/lib/(libnvrtc\.so\.13|libnvrtc-builtins\.so\.13\.\d+|libcublasLt\.so\.13|libnccl\.so\.2)$")
pins = [l.split()[0] for l in open("deploy/cuda-libs.txt") if l.strip() and not l.startswith("#")]
found = []
for pin in pins:
    name, version = pin.split("==")
    stem = name.replace("-", "_") + "-" + version + "-"
    whl = [w for w in glob.glob(os.path.join(wheels, "*.whl")) if os.path.basename(w).startswith(stem)]
    if len(whl) != 1:
        sys.exit(f"build-image.sh: no single wheel for {pin} in {wheels}: {whl}")
    with zipfile.ZipFile(whl[0]) as z:
        for info in z.infolist():
            m = want.search(info.filename)
            if m:
                dst = os.path.join(out, m.group(2))
                with z.open(info) as src, open(dst, "wb") as f:
                    f.write(src.read())
                os.chmod(dst, 0o755)
                found.append(m.group(2))
need = ["libnvrtc.so.13", "libcublasLt.so.13", "libnccl.so.2"]
missing = [n for n in need if n not in found] + ([] if any(f.startswith("libnvrtc-builtins") for f in found) else ["libnvrtc-builtins"])
if missing:
    sys.exit(f"build-image.sh: the wheels lack {missing}")
print("CUDA libraries: " + " ".join(sorted(found)))
PY
# cudarc opens libnccl.so (or .so.<CUDA major>), pip's NCCL ships only libnccl.so.2.
ln -s libnccl.so.2 "$ctx/cuda/libnccl.so"

glibc=$(objdump -T "$ctx/longshot" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
version=$("$ctx/longshot" --version | awk '{print $2}')
tag=${tag:-localhost/longshot:$version}
build_args=()
if [ -n "$base" ]; then build_args+=(--build-arg "BASE=$base"); fi
echo "==> $engine build $tag (binary needs $glibc; base ${base:-as in the Containerfile})"
"$engine" build "${build_args[@]}" "${extra[@]}" -t "$tag" -f "$ctx/Containerfile" "$ctx"
echo "==> built $tag; push it with: $engine push $tag"
