#!/usr/bin/env bash
# Stripped sizes of the pikube binaries (issue 9: the five daemons together at most 40 MB
# for aarch64): builds them in release, strips copies and prints a table of each daemon,
# the five daemons' sum, pikubeadm, and the multi-call `pikube` (all six in one file).
#
# Usage: hack/sizes.sh [--target <triple>] [--no-build]
#   --target aarch64-unknown-linux-gnu   cross-build with aarch64-linux-gnu-gcc and strip
#                                        with aarch64-linux-gnu-strip
#   --no-build                           measure what is already built
# Environment: CARGO_TARGET_DIR (default target/ in the checkout); STRIP (default strip,
# or <gnu-triple>-strip for a cross target).
#
# "built" is what cargo writes (the release profile's strip setting); "stripped" is
# after `strip` (symbols too), what an SD card or a container image would carry.
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="${2:?--target needs a triple}"; shift 2 ;;
    --target=*) target="${1#--target=}"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sizes.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

strip_tool="${STRIP:-strip}"
case "$target" in
  "") ;;
  aarch64-unknown-linux-gnu)
    export CC_aarch64_unknown_linux_gnu="${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
    strip_tool="${STRIP:-aarch64-linux-gnu-strip}"
    ;;
  armv7-unknown-linux-gnueabihf)
    export CC_armv7_unknown_linux_gnueabihf="${CC_armv7_unknown_linux_gnueabihf:-arm-linux-gnueabihf-gcc}"
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER="${CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER:-arm-linux-gnueabihf-gcc}"
    strip_tool="${STRIP:-arm-linux-gnueabihf-strip}"
    ;;
  *) echo "sizes.sh: no cross toolchain settings for $target; set STRIP, CC_* and the linker yourself" >&2 ;;
esac
command -v "$strip_tool" >/dev/null || { echo "sizes.sh: $strip_tool not found" >&2; exit 1; }

daemons=(kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy)
packages=(apiserver scheduler controller-manager kubelet kube-proxy pikubeadm pikube)

if [ "$build" = 1 ]; then
  args=(build --release --bins)
  for p in "${packages[@]}"; do args+=(-p "$p"); done
  [ -n "$target" ] && args+=(--target "$target")
  echo "+ cargo ${args[*]}" >&2
  CARGO_INCREMENTAL=0 cargo "${args[@]}" >&2
fi

target_dir="${CARGO_TARGET_DIR:-target}"
bin_dir="$target_dir/${target:+$target/}release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
size_of() { stat -c %s "$1"; }

# One row: name, bytes as built, bytes stripped.
row() { printf '%-26s %10s %12s %9s\n' "$1" "$(mb "$2")" "$(mb "$3")" "$3"; }

measure() {
  local name=$1 file="$bin_dir/$1"
  [ -f "$file" ] || { echo "sizes.sh: $file is missing (build it, or drop --no-build)" >&2; exit 1; }
  cp "$file" "$work/$name"
  "$strip_tool" "$work/$name"
  built=$(size_of "$file")
  stripped=$(size_of "$work/$name")
}

echo "pikube binary sizes, ${target:-$(rustc -vV | sed -n 's/^host: //p')} ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
printf '%-26s %10s %12s %9s\n' binary "built MB" "stripped MB" "bytes"
sum_built=0
sum_stripped=0
for d in "${daemons[@]}"; do
  measure "$d"
  row "$d" "$built" "$stripped"
  sum_built=$((sum_built + built))
  sum_stripped=$((sum_stripped + stripped))
done
row "five daemons (sum)" "$sum_built" "$sum_stripped"
measure pikubeadm
row pikubeadm "$built" "$stripped"
row "six binaries (sum)" "$((sum_built + built))" "$((sum_stripped + stripped))"
measure pikube
row "pikube (all six, one file)" "$built" "$stripped"
