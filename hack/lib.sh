# shellcheck shell=bash
# Shared by the hack/ scripts. Sourced, not run.

# shellcheck disable=SC2034 # used by the scripts that source this file
PIKUBE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '+++ %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages pikube needs to build and test, when missing.
install_deps() {
  # etcd for the apiserver; containerd, runc, the CNI plugins, nftables, iproute2 and
  # conntrack for the kubelet and kube-proxy; socat for kube-proxy's UDP tests;
  # busybox-static, umoci, gcc and libc6-dev build the test images (hack/images.sh);
  # systemd's systemd-analyze checks the units; ansible and ansible-lint check and run
  # deploy/ansible (hack/test-ansible.sh); jq reads Nodes in hack/local-up.sh.
  local want=(etcd-server etcd-client protobuf-compiler curl ca-certificates gcc libc6-dev pkg-config
    containerd runc containernetworking-plugins nftables iproute2 conntrack socat busybox-static umoci file
    systemd openssl ansible ansible-lint jq)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}: run as root or install them"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Debian's etcd-server starts a system etcd on :2379; pikube runs its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
}

# Waits until a command succeeds, up to $1 seconds.
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
