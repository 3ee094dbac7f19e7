#!/usr/bin/env bash
# Runs every test: unit tests, and component tests against a real etcd and the real
# kubectl, which the tests start themselves. Installs missing system packages first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
install_deps
cd "$PIKUBE_ROOT"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A clean build needs no incremental caches; they would double the disk it takes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo build --workspace --all-targets --features store/testing,apiserver/testing
"$PIKUBE_ROOT/hack/verify-systemd.sh"
cargo test --workspace --features store/testing,apiserver/testing -- --test-threads=2
# deploy/ansible: lint, two runs against this machine (the second changes nothing), the
# node Ready; with the debug binaries just built.
PIKUBE_BIN_DIR="${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/debug" "$PIKUBE_ROOT/hack/test-ansible.sh"
# issue 9's end-to-end scenarios on a three-node cluster (network namespaces), the same
# debug binaries; on a failure every daemon's last log lines.
PIKUBE_BIN_DIR="${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/debug" E2E_LOG_TAIL=40 "$PIKUBE_ROOT/hack/e2e.sh"
"$PIKUBE_ROOT/hack/cross.sh" # issue 9: pikube for arm64 and armv7, each command's --version under qemu-user, dist tarballs
