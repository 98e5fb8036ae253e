#!/usr/bin/env bash
# Runs the README's two commands' install steps on a clean Debian 12 root, as a new user's machine
# has it: a minimal root made by debootstrap, given only what a new Rust machine has (the Rust
# toolchain, bind-mounted read-only from this machine; gcc g++ make git ca-certificates python3
# python3-pip), then a clone of this repository's HEAD (committed work only). There it runs the
# README's render command exactly as written and checks the clip, then the test command's install part
# (`scripts/test.sh --install-only`) and checks what it installed. The cargo registry is shared
# with this machine (downloads only); the target directory is not.
#
# Needs root (debootstrap, mount, chroot) and Debian's package mirror. Takes about 7 minutes on
# 2 cores, most of it the release build inside the root.
# Usage: scripts/fresh-machine-check.sh        (env: DEBIAN_MIRROR, KEEP_FRESH_ROOT=1 to keep it)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=DEBIAN_MIRROR,KEEP_FRESH_ROOT,RUSTUP_HOME,CARGO_HOME "$0" "$@"
fi
command -v debootstrap >/dev/null || scripts/install-deps.sh test

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
for d in "$rustup_home" "$cargo_home/bin"; do
  [ -d "$d" ] || { echo "error: $d not found: this check bind-mounts this machine's Rust toolchain" >&2; exit 1; }
done
mkdir -p "$cargo_home/registry"

work=$(mktemp -d /var/tmp/longshot-fresh.XXXXXX)
root=$work/root
mounted=()
bind() { # bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounted+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true; done
  # Never delete through a mount that is still there (it would reach this machine's files).
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    echo "leaving $work: something is still mounted under it" >&2
  elif [ "${KEEP_FRESH_ROOT:-0}" = 1 ]; then
    echo "kept the fresh root at $root" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

step() { printf '==> [fresh machine %4ss] %s\n' "$SECONDS" "$*"; }

step "debootstrap --variant=minbase bookworm"
debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The network's trust settings come with the network a new machine sits on (here: the CA of a
# TLS-intercepting proxy, and pip told to use the system's CA bundle), not with the project:
# carry them over when this machine has them.
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share" && cp -r /usr/local/share/ca-certificates "$root/usr/local/share/"
fi
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
mkdir -p "$root/proc" && mount -t proc proc "$root/proc" && mounted+=("$root/proc")
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"

in_root() { # in_root COMMAND: runs bash -c COMMAND as root inside, with the toolchain on PATH
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo \
    PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -euo pipefail -c "$1"
}

step "what a new Rust machine has: gcc g++ make git ca-certificates python3 python3-pip"
in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  gcc g++ make libc6-dev git ca-certificates python3 python3-pip >/dev/null"
bind "$rustup_home" "$root/opt/rustup" ro
bind "$cargo_home/bin" "$root/opt/cargo/bin" ro
bind "$cargo_home/registry" "$root/opt/cargo/registry"
in_root "cargo --version && rustc --version"

step "git clone (HEAD $(git rev-parse --short HEAD))"
git -c advice.detachedHead=false -c init.defaultBranch=main clone -q "$repo" "$root/root/longshot"

render=$(grep -m1 '^scripts/render.sh ' README.md) || { echo "error: README.md has no line starting with 'scripts/render.sh '" >&2; exit 1; }
step "the README's render command: $render"
in_root "cd /root/longshot && $render"

step "the README's test command, install part: scripts/test.sh --install-only"
in_root "cd /root/longshot && scripts/test.sh --install-only"
in_root "etcd --version >/dev/null && promtool --version >/dev/null 2>&1 && ffprobe -version >/dev/null && command -v debootstrap >/dev/null \
  && ls /root/longshot/.nvrtc/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null && command -v podman >/dev/null \
  && /root/longshot/.deploy-tools/bin/helm version --short | grep -q '^v4'"

# The clip: every output named by the render command's -o, with exactly duration × fps frames.
out=$(sed -n 's/.* -o \([^ ]*\).*/\1/p' <<<"$render")
duration=$(sed -n 's/.*--duration \([0-9.]*\).*/\1/p' <<<"$render")
fps=$(sed -n 's/.*--fps \([0-9]*\).*/\1/p' <<<"$render"); fps=${fps:-16}
want=$(python3 -c "print(round(${duration:-5} * $fps))")
got=$(in_root "ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 /root/longshot/$out")
if [ "$got" != "$want" ]; then
  echo "error: $out has $got frames, the README's command asks for $want" >&2
  exit 1
fi
step "passed: $out has $got frames; every install step worked on a clean Debian 12 root"
