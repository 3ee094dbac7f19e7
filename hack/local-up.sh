#!/usr/bin/env bash
# Brings up a local pikube cluster: etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, and this machine as a node: a containerd of the cluster's own
# (configured for the kubelet, with the test images busybox:1.35 and pause:3.10 imported)
# the kubelet and kube-proxy (nftables; metrics on 127.0.0.1:10249, healthz on
# 0.0.0.0:10256). Installs what is missing first; run it as root. `hack/local-up.sh down`
# stops it. Every daemon logs to $STATE/logs/<daemon>.log.
#
# Security as a kubeadm cluster's: `pikubeadm certs` writes the PKI to $STATE/pki and the
# kubeconfigs to $STATE (admin.conf, scheduler.conf, controller-manager.conf,
# kube-proxy.conf; the kubelet's in $STATE/pki/nodes/<node>/kubelet.conf). Every client
# authenticates with an x509 certificate signed by the cluster CA, the apiserver authorizes
# with Node,RBAC, and the kubelet's port with Webhook (SubjectAccessReviews).
#
# Environment: PIKUBE_STATE_DIR (default .local/ in the checkout), ETCD_PORT (2379),
# APISERVER_PORT (6443), SCHEDULER_PORT (10259), CONTROLLER_MANAGER_PORT (10257),
# CLUSTER_CIDR (10.42.0.0/16), NODE_NAME (the hostname), NODE_IP (the source address of
# the default route), PIKUBE_OFFLINE (1: containerd never pulls from a registry; images
# must be imported, e.g. by hack/images.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STATE=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.local}
ETCD_PORT=${ETCD_PORT:-2379}
APISERVER_PORT=${APISERVER_PORT:-6443}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-10257}
CLUSTER_CIDR=${CLUSTER_CIDR:-10.42.0.0/16}
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PIKUBE_OFFLINE=${PIKUBE_OFFLINE:-0}
CONTAINERD_SOCK=$STATE/run/containerd.sock
SERVICE_CIDR=10.96.0.0/16
PKI=$STATE/pki
NODE_PKI=$PKI/nodes/$NODE_NAME
# The node's address (the kubelet's InternalIP, in its serving certificate): the source
# address of the default route, else loopback.
NODE_IP=${NODE_IP:-$(ip -4 route get 10.255.255.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)}
NODE_IP=${NODE_IP:-127.0.0.1}
mkdir -p "$STATE/logs" "$STATE/run"

stop() {
  local name=$1 pidfile="$STATE/run/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name ($pid)"
    kill "$pid" 2>/dev/null || true
    wait_for 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

running() { [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

case "${1:-up}" in
  down)
    stop kube-proxy
    # kube-proxy leaves its rules in place when it stops (as upstream): remove its tables.
    if [ -x "$PIKUBE_ROOT/target/release/kube-proxy" ]; then
      "$PIKUBE_ROOT/target/release/kube-proxy" --cleanup >>"$STATE/logs/kube-proxy.log" 2>&1 || true
    fi
    stop kubelet
    netns=""
    if running containerd; then
      # Pods outlive containerd (their shims): remove them first, noting the network
      # namespaces of their sandboxes (a sandbox's pause container has the path in its spec).
      for id in $(ctr -a "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
        netns="$netns $(ctr -a "$CONTAINERD_SOCK" -n k8s.io containers info "$id" 2>/dev/null |
          grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' | head -n1 || true)"
        ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
        ctr -a "$CONTAINERD_SOCK" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
      done
    fi
    stop containerd
    # Without the CNI DEL a sandbox's removal through CRI would run: the sandboxes'
    # namespaces (their veths go with them), the IPs host-local handed out to them and the
    # pod bridge once nothing is plugged into it.
    for ns in $netns; do ip netns del "$(basename "$ns")" 2>/dev/null || true; done
    rm -rf "$STATE/kubelet/cni/networks"
    # (The kernel takes a namespace's veths down after `ip netns del` returns.)
    if ip link show cni0 >/dev/null 2>&1 &&
      wait_for 10 bash -c '[ -z "$(ls /sys/class/net/cni0/brif 2>/dev/null)" ]'; then
      ip link del cni0 2>/dev/null || true
    fi
    # The kubelet's pod network rules outlive it (as pods do): its nftables table and its
    # routes to other nodes' pods (routing protocol 150); nothing else is touched.
    nft delete table inet pikube-kubelet 2>/dev/null || true
    ip route flush proto 150 2>/dev/null || true
    # Sandbox shm and rootfs mounts containerd left.
    awk -v dir="$STATE/" 'index($5, dir) == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    stop kube-controller-manager
    stop kube-scheduler
    stop kube-apiserver
    stop etcd
    log "cluster stopped (state kept in $STATE; remove it for a fresh start)"
    exit 0
    ;;
  up) ;;
  *) die "usage: $0 [up|down]" ;;
esac

install_deps
log "building (release)"
(cd "$PIKUBE_ROOT" && cargo build --release --quiet -p apiserver -p scheduler -p controller-manager \
  -p kubelet -p kube-proxy -p pikubeadm)
BIN=$PIKUBE_ROOT/target/release

# An older local-up authenticated every daemon with static tokens ($STATE/tokens.csv) and
# let the apiserver sign its own certificate ($STATE/certs): stop what it started and drop
# its credentials. etcd's data, containerd's images and the logs stay.
if [ -e "$STATE/tokens.csv" ] || [ -d "$STATE/certs" ]; then
  log "replacing an older local-up's static tokens and self-signed certificates in $STATE"
  "$0" down
  rm -rf "$STATE/tokens.csv" "$STATE/certs"
  rm -f "$STATE"/{admin,kube-scheduler,kube-controller-manager,kubelet,kube-proxy}.kubeconfig
fi

# The cluster's PKI, from pikubeadm (rcgen; rerunning keeps every key and renews only
# what expires or no longer matches): the CA (which also signs the apiserver's kubelet
# client certificate and the kubelet's serving certificate), the apiserver's serving
# certificate, the ServiceAccount key pair, and a client certificate in a kubeconfig for
# the admin (system:masters) and for each daemon as the user upstream's default roles
# name (system:kube-scheduler, system:kube-controller-manager, system:kube-proxy,
# system:node:$NODE_NAME in system:nodes).
log "writing the cluster's certificates and kubeconfigs (pikubeadm certs) to $PKI"
"$BIN/pikubeadm" certs --cert-dir "$PKI" --kubeconfig-dir "$STATE" --cluster-name pikube \
  --control-plane 127.0.0.1 --apiserver-bind-port "$APISERVER_PORT" --service-cidr "$SERVICE_CIDR" \
  --node "$NODE_NAME=$NODE_IP" >"$STATE/logs/pikubeadm.log" 2>&1 ||
  die "pikubeadm certs failed; see $STATE/logs/pikubeadm.log"

if ! running etcd; then
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  etcd --name pikube --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "pikube=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn \
    >"$STATE/logs/etcd.log" 2>&1 &
  echo $! >"$STATE/run/etcd.pid"
fi
wait_for 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not become healthy; see $STATE/logs/etcd.log"

if ! running kube-apiserver; then
  log "starting kube-apiserver on 127.0.0.1:$APISERVER_PORT"
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --authorization-mode Node,RBAC \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --kubelet-preferred-address-types InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-signing-key-file "$PKI/sa.key" --service-account-key-file "$PKI/sa.pub" \
    >"$STATE/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$STATE/run/kube-apiserver.pid"
fi
# As the admin (kubernetes-admin in system:masters), verifying the apiserver with the CA.
admin_curl() { curl --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
wait_for 60 admin_curl -fsS "https://127.0.0.1:$APISERVER_PORT/readyz" ||
  die "kube-apiserver did not become ready; see $STATE/logs/kube-apiserver.log"

# Cluster DNS: kube-proxy answers on the kube-dns Service's address on every node (no
# DNS pods); the Service reserves the address, and the kubelet hands it to pods.
CLUSTER_DNS=10.96.0.10
# Created only when missing: a second create is refused for its address (422, "provided IP
# is already allocated") before its name.
services=https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/kube-system/services
code=$(admin_curl -sS -o /dev/null -w '%{http_code}' "$services/kube-dns")
if [ "$code" = 404 ]; then
  code=$(admin_curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$services" \
    -d '{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system","labels":{"k8s-app":"kube-dns"}},"spec":{"clusterIP":"'"$CLUSTER_DNS"'","selector":{"k8s-app":"kube-dns"},"ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}')
fi
case "$code" in 200 | 201 | 409) ;; *) die "creating the kube-dns Service failed (HTTP $code)" ;; esac

if ! running kube-scheduler; then
  log "starting kube-scheduler (health and metrics on 127.0.0.1:$SCHEDULER_PORT)"
  "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.conf" \
    --authentication-kubeconfig "$STATE/scheduler.conf" --authorization-kubeconfig "$STATE/scheduler.conf" \
    --client-ca-file "$PKI/ca.crt" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$STATE/serving/kube-scheduler" \
    >"$STATE/logs/kube-scheduler.log" 2>&1 &
  echo $! >"$STATE/run/kube-scheduler.pid"
fi
wait_for 60 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/readyz" || die "kube-scheduler did not become ready; see $STATE/logs/kube-scheduler.log"

if ! running kube-controller-manager; then
  log "starting kube-controller-manager (health and metrics on 127.0.0.1:$CONTROLLER_MANAGER_PORT)"
  "$BIN/kube-controller-manager" --kubeconfig "$STATE/controller-manager.conf" \
    --authentication-kubeconfig "$STATE/controller-manager.conf" \
    --authorization-kubeconfig "$STATE/controller-manager.conf" --client-ca-file "$PKI/ca.crt" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --cert-dir "$STATE/serving/kube-controller-manager" --cluster-cidr "$CLUSTER_CIDR" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    >"$STATE/logs/kube-controller-manager.log" 2>&1 &
  echo $! >"$STATE/run/kube-controller-manager.pid"
fi
wait_for 60 curl -fsSk "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/readyz" ||
  die "kube-controller-manager did not become ready; see $STATE/logs/kube-controller-manager.log"

# The node's containerd: its own root, state, sockets and runc root (it may share the
# machine with a system containerd), cgroupfs unless PID 1 is systemd, the CNI config the
# kubelet writes, and the locally built pause image.
CTRD=$STATE/containerd
mkdir -p "$CTRD" "$STATE/cni/net.d"
cgroup_systemd=false
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && cgroup_systemd=true
registry_config=""
if [ "$PIKUBE_OFFLINE" = 1 ]; then
  # Every registry resolves to a closed loopback port: a missing image fails at once.
  for reg in _default docker.io registry.k8s.io; do
    mkdir -p "$CTRD/certs.d/$reg"
    printf 'server = "http://127.0.0.1:1"\n\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n' \
      >"$CTRD/certs.d/$reg/hosts.toml"
  done
  registry_config="config_path = \"$CTRD/certs.d\""
fi
cat >"$CTRD/config.toml" <<CONFIG
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CTRD/ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = $cgroup_systemd
  Root = "$CTRD/runc"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$STATE/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".registry]
  $registry_config
CONFIG
if ! running containerd; then
  log "starting containerd on $CONTAINERD_SOCK"
  containerd --config "$CTRD/config.toml" >"$STATE/logs/containerd.log" 2>&1 &
  echo $! >"$STATE/run/containerd.pid"
fi
wait_for 30 ctr -a "$CONTAINERD_SOCK" version || die "containerd did not start; see $STATE/logs/containerd.log"
log "importing the local images (busybox:1.35, pause:3.10)"
"$PIKUBE_ROOT/hack/images.sh" --address "$CONTAINERD_SOCK" >"$STATE/logs/images.log" 2>&1 ||
  die "building or importing the images failed; see $STATE/logs/images.log"

if ! running kubelet; then
  log "starting kubelet as node $NODE_NAME (healthz on 127.0.0.1:10248)"
  cgroup_driver=cgroupfs
  [ "$cgroup_systemd" = true ] && cgroup_driver=systemd
  "$BIN/kubelet" --kubeconfig "$NODE_PKI/kubelet.conf" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" \
    --container-runtime-endpoint "unix://$CONTAINERD_SOCK" --root-dir "$STATE/kubelet" \
    --cni-conf-dir "$STATE/cni/net.d" --cgroup-driver "$cgroup_driver" \
    --cluster-dns "$CLUSTER_DNS" --cluster-domain cluster.local \
    --tls-cert-file "$NODE_PKI/kubelet.crt" --tls-private-key-file "$NODE_PKI/kubelet.key" \
    --anonymous-auth=false --authentication-token-webhook --authorization-mode Webhook \
    --client-ca-file "$PKI/ca.crt" \
    >"$STATE/logs/kubelet.log" 2>&1 &
  echo $! >"$STATE/run/kubelet.pid"
fi
wait_for 60 curl -fsS http://127.0.0.1:10248/healthz || die "kubelet did not become healthy; see $STATE/logs/kubelet.log"

if ! running kube-proxy; then
  log "starting kube-proxy as node $NODE_NAME (metrics on 127.0.0.1:10249, healthz on 0.0.0.0:10256)"
  "$BIN/kube-proxy" --kubeconfig "$STATE/kube-proxy.conf" --hostname-override "$NODE_NAME" \
    --cluster-cidr "$CLUSTER_CIDR" --metrics-bind-address 127.0.0.1:10249 \
    --healthz-bind-address 0.0.0.0:10256 --enable-service-lb --enable-cluster-dns \
    >"$STATE/logs/kube-proxy.log" 2>&1 &
  echo $! >"$STATE/run/kube-proxy.pid"
fi
wait_for 60 curl -fsS http://127.0.0.1:10256/healthz || die "kube-proxy did not become healthy; see $STATE/logs/kube-proxy.log"

log "cluster is up; logs in $STATE/logs"
echo "export KUBECONFIG=$STATE/admin.conf"
