#!/usr/bin/env bash
# Per-architecture release tarballs (issue 9): dist/pikube-<version>-<arch>.tar.gz, arch
# being Debian's name (arm64, armhf, amd64), each unpacking to pikube-<version>-<arch>/:
#   bin/          pikube, stripped, and a relative link to it for each command:
#                 kube-apiserver kube-scheduler kube-controller-manager kubelet
#                 kube-proxy pikubeadm (pikube runs the command its link is named after)
#   systemd/      the units and their example env files
#   deploy/ansible/  the playbook (-e pikube_bin_dir=$PWD/bin)
#   README.md, LICENSE* (when present)
#   SHA256SUMS    of every file above
# and dist/SHA256SUMS of the tarballs. The version is the workspace's (Cargo.toml).
#
# Usage: hack/dist.sh [--target <triple>]... [--profile <p>] [--no-build] [--out-dir <d>]
#                     [--check | --check-only]
#   --target      aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf,
#                 x86_64-unknown-linux-gnu (default: all three); repeat for several
#   --profile     cargo profile (default release: fat LTO, long)
#   --no-build    package what is already built
#   --out-dir     where the tarballs go (default dist/)
#   --check       after packaging, unpack each tarball, verify its SHA256SUMS and run
#                 every bin/ command's --version (under qemu-user for a foreign arch)
#   --check-only  only that, on tarballs already in the out dir
# Tarballs are reproducible: sorted, owned by 0:0, dated by the last commit.
set -euo pipefail
# shellcheck source=hack/cross.sh
source "$(dirname "$0")/cross.sh"
cd "$CROSS_ROOT"

targets=()
profile=release
build=1
package=1
check=0
out_dir=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --target) targets+=("${2:?--target needs a triple}"); shift 2 ;;
    --target=*) targets+=("${1#--target=}"); shift ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    --no-build) build=0; shift ;;
    --out-dir) out_dir="${2:?--out-dir needs a directory}"; shift 2 ;;
    --out-dir=*) out_dir="${1#--out-dir=}"; shift ;;
    --check) check=1; shift ;;
    --check-only) check=1 build=0 package=0; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dist.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] ||
  targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)
for triple in "${targets[@]}"; do cross_setup "$triple"; done

# [workspace.package] version in the root Cargo.toml.
version=$(awk '
  /^\[/ { in_pkg = ($0 == "[workspace.package]") }
  in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
' Cargo.toml)
[ -n "$version" ] || cross_die "no [workspace.package] version in Cargo.toml"

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$build" = 1 ]; then
  cross_install "${targets[@]}"
  args=(build -p pikube --bin pikube --profile "$profile")
  for triple in "${targets[@]}"; do
    cross_setup "$triple"
    args+=(--target "$triple")
  done
  cross_log "cargo ${args[*]}"
  CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0} cargo "${args[@]}"
fi

# The files that ship besides the binaries: tracked ones only in a git checkout (no
# editor backups, retry files or local inventories), the working tree's content.
shipped_files() {
  local paths=(systemd deploy/ansible README.md)
  local license
  for license in LICENSE*; do [ -e "$license" ] && paths+=("$license"); done
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -- "${paths[@]}"
  else
    find "${paths[@]}" -type f 2>/dev/null | sort
  fi
}

# The last commit's time, so the same tree packs to the same bytes.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

package_target() {
  local triple=$1 name stage bin src
  cross_setup "$triple"
  name=pikube-$version-$CROSS_ARCH
  stage=$work/$name
  src=$(cross_bin_dir "$triple" "$profile")/pikube
  [ -f "$src" ] || cross_die "$src is missing: build it (drop --no-build)"
  command -v "$CROSS_STRIP" >/dev/null || cross_install "$triple"
  bin=$stage/bin
  mkdir -p "$bin"
  cp "$src" "$bin/pikube"
  "$CROSS_STRIP" "$bin/pikube"
  chmod 0755 "$bin/pikube"
  for cmd in "${CROSS_COMMANDS[@]}"; do ln -s pikube "$bin/$cmd"; done
  while IFS= read -r f; do
    mkdir -p "$stage/$(dirname "$f")"
    cp -p "$f" "$stage/$f"
  done < <(shipped_files)
  (cd "$stage" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$work/sums"
  mv "$work/sums" "$stage/SHA256SUMS"
  tar -C "$work" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --mode='u+rwX,go+rX,go-w' -cf - "$name" | gzip -n -9 >"$out_dir/$name.tar.gz"
  rm -rf "$stage"
  printf '%s  %s (%s bytes; pikube %s bytes stripped)\n' "$triple" "$out_dir/$name.tar.gz" \
    "$(stat -c %s "$out_dir/$name.tar.gz")" "$(tar -xzOf "$out_dir/$name.tar.gz" "$name/bin/pikube" | wc -c)"
}

# Unpacks a tarball, verifies its checksums, its layout and every command's --version.
check_target() {
  local triple=$1 name tarball dir f
  cross_setup "$triple"
  name=pikube-$version-$CROSS_ARCH
  tarball=$out_dir/$name.tar.gz
  [ -f "$tarball" ] || cross_die "$tarball is missing"
  mkdir -p "$work/check"
  tar -C "$work/check" -xzf "$tarball"
  dir=$work/check/$name
  (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || cross_die "$tarball: SHA256SUMS do not match"
  for f in systemd/kube-apiserver.service systemd/kubelet.service deploy/ansible/site.yml README.md; do
    [ -f "$dir/$f" ] || cross_die "$tarball lacks $f"
  done
  for cmd in "${CROSS_COMMANDS[@]}"; do
    [ "$(readlink "$dir/bin/$cmd")" = pikube ] || cross_die "$tarball: bin/$cmd is not a link to pikube"
  done
  cross_check_versions "$triple" "$dir/bin" || cross_die "$tarball: a command did not print its version"
  rm -rf "$work/check"
  echo "ok   $tarball"
}

if [ "$package" = 1 ]; then
  for triple in "${targets[@]}"; do package_target "$triple"; done
  (cd "$out_dir" && find . -maxdepth 1 -name 'pikube-*.tar.gz' -printf '%P\n' | LC_ALL=C sort |
    xargs -d '\n' -r sha256sum >SHA256SUMS)
fi
if [ "$check" = 1 ]; then
  cross_install "${targets[@]}"
  for triple in "${targets[@]}"; do check_target "$triple"; done
fi
