#!/usr/bin/env bash
# Stripped sizes of the pikube binaries (issue 9: the five daemons together at most 40 MB
# for aarch64): builds them in release, strips copies and prints a table of each daemon,
# the five daemons' sum, pikubeadm, and the multi-call `pikube` (all six in one file).
#
# Usage: hack/sizes.sh [--target <triple>] [--no-build] [--pikube-only]
#   --target <triple>   cross-build (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)
#                       with the GNU cross gcc and strip, installed by hack/cross.sh
#   --no-build          measure what is already built (missing binaries print as such)
#   --pikube-only       build only the multi-call pikube (one fat-LTO link instead of seven;
#                       the separate binaries print as not built unless built before)
# Environment: CARGO_TARGET_DIR (default target/ in the checkout); STRIP (default strip,
# or <gnu-triple>-strip for a cross target).
#
# "built" is what cargo writes (the release profile's strip setting); "stripped" is
# after `strip` (symbols too), what an SD card or a container image would carry.
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
build=1
pikube_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="${2:?--target needs a triple}"; shift 2 ;;
    --target=*) target="${1#--target=}"; shift ;;
    --no-build) build=0; shift ;;
    --pikube-only) pikube_only=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sizes.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

strip_tool="${STRIP:-strip}"
if [ -n "$target" ]; then
  # The cross toolchain's CC, linker and strip, installed when missing (hack/cross.sh).
  # shellcheck source=hack/cross.sh
  source "$(dirname "$0")/cross.sh"
  cross_setup "$target"
  [ "$build" = 1 ] && cross_install "$target"
  strip_tool="${STRIP:-$CROSS_STRIP}"
fi
command -v "$strip_tool" >/dev/null || { echo "sizes.sh: $strip_tool not found" >&2; exit 1; }

daemons=(kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy)
packages=(apiserver scheduler controller-manager kubelet kube-proxy pikubeadm pikube)
[ "$pikube_only" = 1 ] && packages=(pikube)

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

# With --no-build a binary not built yet prints as missing and sums that need it as "-".
incomplete=0
# measure <binary> [<label>]
measure() {
  local name=$1 file="$bin_dir/$1" label=${2:-$1}
  if [ ! -f "$file" ]; then
    if [ "$build" = 1 ] && { [ "$pikube_only" = 0 ] || [ "$name" = pikube ]; }; then
      echo "sizes.sh: $file is missing after the build" >&2
      exit 1
    fi
    built=0 stripped=0 incomplete=1
    printf '%-26s %10s %12s %9s\n' "$label" - - "not built" && return 0
  fi
  cp "$file" "$work/$name"
  "$strip_tool" "$work/$name"
  built=$(size_of "$file")
  stripped=$(size_of "$work/$name")
  row "$label" "$built" "$stripped"
}

# A sum row, or "-" when a binary it adds up is missing.
sum_row() {
  if [ "$incomplete" = 1 ]; then
    printf '%-26s %10s %12s %9s\n' "$1" - - -
  else
    row "$@"
  fi
}

echo "pikube binary sizes, ${target:-$(rustc -vV | sed -n 's/^host: //p')} ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
printf '%-26s %10s %12s %9s\n' binary "built MB" "stripped MB" "bytes"
sum_built=0
sum_stripped=0
for d in "${daemons[@]}"; do
  measure "$d"
  sum_built=$((sum_built + built))
  sum_stripped=$((sum_stripped + stripped))
done
sum_row "five daemons (sum)" "$sum_built" "$sum_stripped"
measure pikubeadm
sum_row "six binaries (sum)" "$((sum_built + built))" "$((sum_stripped + stripped))"
measure pikube "pikube (all six, one file)"
