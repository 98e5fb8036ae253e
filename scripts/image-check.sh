#!/usr/bin/env bash
# Builds the real container image (deploy/Containerfile, through deploy/build-image.sh) on a
# local Debian 12 base and runs it without a container runtime: podman builds the image (with
# --isolation chroot, since containers cannot run on this machine), the image's filesystem is
# exported (podman create + podman export) and the image's entrypoint is run with chroot as the
# image's user, to render a short clip with the procedural model (MP4, and ProRes through the
# image's ffmpeg). Checks: the image's user is not root; every CUDA library in the image finds its
# dependencies with the image's own loader; the clip has the frames asked for.
#
# The base is `debootstrap --variant=minbase bookworm` imported with `podman import`, cached as a
# tarball in .deploy-cache/ (git-ignored). Needs root (debootstrap, podman, chroot, mount).
# Usage: scripts/image-check.sh [--binary PATH]   (a longshot built with --features cuda;
#        default: deploy/build-image.sh builds it)    env: DEBIAN_MIRROR
set -euo pipefail
cd "$(dirname "$0")/.."

binary_args=()
if [ "${1:-}" = --binary ]; then binary_args=(--binary "$2"); shift 2; fi

step() { printf '==> [image %4ss] %s\n' "$SECONDS" "$*"; }
fail() { echo "image-check: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || fail "needs root (debootstrap, podman, chroot): run it as root"
  exec sudo --preserve-env=DEBIAN_MIRROR "$0" "${binary_args[@]}"
fi
for tool in podman debootstrap chroot ffprobe objdump strip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-deps.sh test installs it)"
done

cache=$PWD/.deploy-cache
base_tar=$cache/base-bookworm-minbase.tar
base_image=localhost/longshot-ci-base:bookworm
image=localhost/longshot:ci
mkdir -p "$cache"

if [ ! -s "$base_tar" ]; then
  step "debootstrap --variant=minbase bookworm (cached in .deploy-cache/)"
  broot=$(mktemp -d /var/tmp/longshot-base.XXXXXX)
  debootstrap --variant=minbase bookworm "$broot" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$broot.log" 2>&1 || { tail -20 "$broot.log" >&2; rm -rf "$broot"; fail "debootstrap failed"; }
  rm -rf "$broot"/var/cache/apt/archives/*.deb "$broot"/var/lib/apt/lists/*
  tar -C "$broot" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  rm -rf "$broot" "$broot.log"
  podman rmi -f "$base_image" >/dev/null 2>&1 || true
fi
if ! podman image exists "$base_image"; then
  step "podman import the base as $base_image"
  podman import --quiet "$base_tar" "$base_image" >/dev/null
fi

step "deploy/build-image.sh --base $base_image --tag $image"
deploy/build-image.sh --engine podman --base "$base_image" --tag "$image" "${binary_args[@]}" -- --isolation chroot
# The previous run's image (untagged now) and its own layers; the shared ones (base, ffmpeg) stay
# as the build cache.
podman image prune -f >/dev/null

user=$(podman image inspect --format '{{.Config.User}}' "$image")
entrypoint=$(podman image inspect --format '{{join .Config.Entrypoint " "}}' "$image")
mapfile -t env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
uid=${user%%:*}
gid=${user#*:}; [ "$gid" != "$user" ] || gid=$uid
case "$uid" in ''|*[!0-9]*) fail "the image's USER is '$user': give it as a numeric uid[:gid] (Kubernetes' runAsNonRoot needs one)" ;; esac
[ "$uid" -ne 0 ] || fail "the image runs as root (USER $user)"
[ "$entrypoint" = /usr/local/bin/longshot ] || fail "unexpected entrypoint '$entrypoint'"

work=$(mktemp -d /var/tmp/longshot-image.XXXXXX)
root=$work/root
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true; done
  podman rm -f longshot-ci-export >/dev/null 2>&1 || true
  if findmnt -rn -o TARGET | grep -q "^$root"; then echo "leaving $work: something is still mounted under it" >&2
  else rm -rf "$work"; fi
}
trap cleanup EXIT

step "podman create + podman export → $root"
podman rm -f longshot-ci-export >/dev/null 2>&1 || true
podman create --name longshot-ci-export "$image" >/dev/null
mkdir -p "$root"
podman export longshot-ci-export | tar -C "$root" -xf -
passwd_user=$(awk -F: -v u="$uid" '$3 == u {print $1}' "$root/etc/passwd")
[ -n "$passwd_user" ] || fail "uid $uid has no entry in the image's /etc/passwd"
echo "image user: $user ($passwd_user), entrypoint $entrypoint, env: ${env[*]}"

step "every CUDA library in the image resolves its dependencies with the image's loader"
libdir=$root/opt/longshot/cuda/lib
for lib in libnvrtc.so.13 libcublasLt.so.13 libnccl.so libnccl.so.2 "$(cd "$libdir" && ls libnvrtc-builtins.so.13.*)"; do
  [ -e "$libdir/$lib" ] || fail "the image has no /opt/longshot/cuda/lib/$lib"
  out=$(chroot "$root" /lib64/ld-linux-x86-64.so.2 --list "/opt/longshot/cuda/lib/$lib" 2>&1) || fail "$lib: $out"
  if grep -q 'not found' <<<"$out"; then fail "$lib: $(grep 'not found' <<<"$out")"; fi
  echo "  $lib: ok"
done

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
# The image's /tmp and data directory; the entrypoint runs as the image's user with the image's
# environment only.
out_dir=/var/lib/longshot/ci
mkdir -p "$root$out_dir" && chown "$uid:$gid" "$root$out_dir"
step "chroot --userspec=$uid:$gid: $entrypoint render --frames 17 --width 64 --height 64 --steps 2 (procedural, mp4 + ProRes)"
env -i "${env[@]}" chroot --userspec="$uid:$gid" "$root" $entrypoint \
  render --prompt "a slow red sunset over the sea" --frames 17 --width 64 --height 64 --steps 2 \
  --workers 2 --format mp4,prores -o "$out_dir/clip.mp4"
for f in clip.mp4 clip.mov; do
  owner=$(stat -c %u "$root$out_dir/$f")
  [ "$owner" = "$uid" ] || fail "$f is owned by uid $owner, not the image's user $uid"
  frames=$(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets,codec_name -of csv=p=0 "$root$out_dir/$f")
  [ "${frames#*,}" = 17 ] || fail "$f: expected 17 frames, ffprobe says '$frames'"
  echo "  $f: $frames frames (codec,frames), owned by uid $owner"
done
size=$(podman image inspect --format '{{.Size}}' "$image")
step "passed: $image ($((size >> 20)) MiB) runs as $user and renders with its own libraries and ffmpeg"
