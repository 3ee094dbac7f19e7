#!/usr/bin/env bash
# Cross-builds pikube for the Raspberry Pi architectures (issue 9) and runs every command
# it holds under qemu-user: kube-apiserver, kube-scheduler, kube-controller-manager,
# kubelet, kube-proxy and pikubeadm, each through a link named after it (as installed),
# must print its version line and exit 0. Then packages what it built with hack/dist.sh
# and checks the tarballs the same way.
#
# Usage: hack/cross.sh [--target <triple>]... [--profile <p>] [--no-dist]
#   --target     aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf (both by
#                default) or x86_64-unknown-linux-gnu; repeat for several
#   --profile    cargo profile (default cross-check: dev without debug info or
#                optimisation, the cheapest build that proves the code compiles and links
#                for the target; release for what ships)
#   --no-dist    skip the hack/dist.sh packaging check
# Installs what is missing: the cross gcc (C parts of ring), qemu-user-static (apt-get)
# and the Rust standard library for each target (rustup target add).
#
# Sourced (by dist.sh and sizes.sh) it only defines the cross_* functions below.
set -euo pipefail

CROSS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The daemons' names (each a link to pikube when installed) and pikubeadm.
CROSS_COMMANDS=(kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy pikubeadm)
CROSS_DEFAULT_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

cross_log() { printf '+++ %s\n' "$*" >&2; }
cross_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cross_host() { rustc -vV | sed -n 's/^host: //p'; }

# Sets, for one target triple: CROSS_ARCH (Debian's name: arm64, armhf, amd64),
# CROSS_GNU (the GNU toolchain prefix, empty when native), CROSS_STRIP, CROSS_QEMU and
# CROSS_SYSROOT (empty when the target runs natively), CROSS_MACHINE (readelf's Machine
# line) and CROSS_APT (the Debian packages it needs); exports cargo's CC and linker for
# the target.
# shellcheck disable=SC2034 # CROSS_ARCH and CROSS_STRIP are for dist.sh and sizes.sh
cross_setup() {
  local triple=$1 host
  host=$(cross_host)
  case "$triple" in
    aarch64-unknown-linux-gnu)
      CROSS_ARCH=arm64 CROSS_GNU=aarch64-linux-gnu CROSS_MACHINE=AArch64 CROSS_QEMU_CPU=aarch64 ;;
    armv7-unknown-linux-gnueabihf)
      CROSS_ARCH=armhf CROSS_GNU=arm-linux-gnueabihf CROSS_MACHINE=ARM CROSS_QEMU_CPU=arm ;;
    x86_64-unknown-linux-gnu)
      CROSS_ARCH=amd64 CROSS_GNU=x86_64-linux-gnu CROSS_MACHINE=X86-64 CROSS_QEMU_CPU=x86_64 ;;
    *) # Always a command-line value (--target): a usage error.
      printf 'error: no cross settings for target %s (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, x86_64-unknown-linux-gnu)\n' "$triple" >&2
      exit 64 ;;
  esac
  if [ "$triple" = "$host" ]; then
    CROSS_GNU="" CROSS_QEMU="" CROSS_SYSROOT="" CROSS_STRIP=strip CROSS_APT=(gcc libc6-dev binutils)
    return
  fi
  CROSS_SYSROOT=/usr/$CROSS_GNU
  CROSS_STRIP=$CROSS_GNU-strip
  CROSS_APT=("gcc-$CROSS_GNU" "libc6-dev-$CROSS_ARCH-cross" "binutils-$CROSS_GNU" qemu-user-static)
  # Debian names the static emulators qemu-<cpu>-static; a plain qemu-user has qemu-<cpu>.
  CROSS_QEMU=qemu-$CROSS_QEMU_CPU-static
  command -v "$CROSS_QEMU" >/dev/null 2>&1 || ! command -v "qemu-$CROSS_QEMU_CPU" >/dev/null 2>&1 ||
    CROSS_QEMU=qemu-$CROSS_QEMU_CPU
  local env_triple=${triple//-/_}
  local upper=${env_triple^^}
  export "CC_$env_triple=${CROSS_GNU}-gcc"
  export "AR_$env_triple=${CROSS_GNU}-ar"
  export "CARGO_TARGET_${upper}_LINKER=${CROSS_GNU}-gcc"
}

# Installs what building and running the given targets needs, when missing.
cross_install() {
  local triple want=() missing=() p installed
  for triple in "$@"; do
    cross_setup "$triple"
    want+=("${CROSS_APT[@]}")
  done
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || cross_die "missing packages ${missing[*]}: run as root or install them"
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    cross_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  installed=$(rustup target list --installed)
  for triple in "$@"; do
    grep -qx "$triple" <<<"$installed" || { cross_log "rustup target add $triple"; rustup target add "$triple"; }
  done
}

# Runs a program built for the target: natively, or under qemu-user with the target's C
# library. argv[0] is the path given, so a link named kubelet runs the kubelet.
cross_run() {
  local triple=$1
  shift
  cross_setup "$triple"
  if [ -z "$CROSS_QEMU" ]; then
    "$@"
  else
    "$CROSS_QEMU" -L "$CROSS_SYSROOT" "$@"
  fi
}

# Checks a directory holding pikube and a link to it per command: each file is an ELF for
# the target's machine, and each command run through its link prints its version line
# (`<name> vX.Y.Z`; pikube's own `pikube X.Y.Z (Kubernetes vX.Y.Z)`) and exits 0.
cross_check_versions() {
  local triple=$1 dir=$2 name out rc machine failed=0
  cross_setup "$triple"
  machine=$(readelf -h "$dir/pikube" | sed -n 's/^ *Machine: *//p')
  case "$machine" in
    *"$CROSS_MACHINE"*) ;;
    *) echo "FAIL $triple: $dir/pikube is for machine '$machine', not $CROSS_MACHINE" >&2; return 1 ;;
  esac
  for name in pikube "${CROSS_COMMANDS[@]}"; do
    rc=0
    out=$(cross_run "$triple" "$dir/$name" --version 2>&1) || rc=$?
    local pattern="^$name v[0-9]+\.[0-9]+\.[0-9]+"
    [ "$name" = pikube ] && pattern='^pikube [0-9]+\.[0-9]+\.[0-9]+ \(Kubernetes v[0-9]+\.[0-9]+\.[0-9]+\)'
    if [ "$rc" -eq 0 ] && grep -Eq "$pattern" <<<"$out"; then
      printf 'ok   %-32s %-24s %s\n' "$triple" "$name" "$(head -n1 <<<"$out")"
    else
      printf 'FAIL %-32s %-24s exit %s: %s\n' "$triple" "$name" "$rc" "$(head -n3 <<<"$out")" >&2
      failed=1
    fi
  done
  return "$failed"
}

# The directory cargo writes a profile's binaries to for a target.
cross_bin_dir() {
  local triple=$1 profile=$2 dir
  dir=$profile
  [ "$profile" = dev ] && dir=debug
  [ "$profile" = test ] && dir=debug
  [ "$profile" = bench ] && dir=release
  echo "${CARGO_TARGET_DIR:-$CROSS_ROOT/target}/$triple/$dir"
}

cross_main() {
  local targets=() profile=cross-check dist=1 triple
  while [ $# -gt 0 ]; do
    case "$1" in
      --target) targets+=("${2:?--target needs a triple}"); shift 2 ;;
      --target=*) targets+=("${1#--target=}"); shift ;;
      --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
      --profile=*) profile="${1#--profile=}"; shift ;;
      --no-dist) dist=0; shift ;;
      -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "cross.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
  done
  [ "${#targets[@]}" -gt 0 ] || targets=("${CROSS_DEFAULT_TARGETS[@]}")
  for triple in "${targets[@]}"; do cross_setup "$triple"; done

  local start=$SECONDS
  cross_install "${targets[@]}"
  cd "$CROSS_ROOT"
  # One cargo run for every target: build scripts and proc macros (host code) are built
  # once for all of them.
  local args=(build -p pikube --bin pikube --profile "$profile")
  for triple in "${targets[@]}"; do
    cross_setup "$triple"
    args+=(--target "$triple")
  done
  cross_log "cargo ${args[*]}"
  CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0} cargo "${args[@]}"
  cross_log "built in $((SECONDS - start))s"

  local work failed=0
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" EXIT
  for triple in "${targets[@]}"; do
    mkdir "$work/$triple"
    cp "$(cross_bin_dir "$triple" "$profile")/pikube" "$work/$triple/pikube"
    for name in "${CROSS_COMMANDS[@]}"; do ln -s pikube "$work/$triple/$name"; done
    cross_check_versions "$triple" "$work/$triple" || failed=1
  done
  [ "$failed" = 0 ] || cross_die "a command did not print its version under qemu (above)"

  if [ "$dist" = 1 ]; then
    local dist_args=(--profile "$profile" --no-build --out-dir "$work/dist" --check)
    for triple in "${targets[@]}"; do dist_args+=(--target "$triple"); done
    "$CROSS_ROOT/hack/dist.sh" "${dist_args[@]}"
  fi
  cross_log "cross.sh: ${targets[*]} ($profile) ok in $((SECONDS - start))s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cross_main "$@"
fi
