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
