#!/usr/bin/env bash
# Brings up a local pikube cluster: etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, and this machine as a node: a containerd of the cluster's own
# (configured for the kubelet, with the test images busybox:1.35 and pause:3.10 imported)
# the kubelet and kube-proxy (nftables; metrics on 127.0.0.1:10249, healthz on
# 0.0.0.0:10256). Installs what is missing first; run it as root. `hack/local-up.sh down`
# stops it. Every daemon logs to $STATE/logs/<daemon>.log.
#
# usage: hack/local-up.sh [up] [--nodes N]
#        hack/local-up.sh down
#
# --nodes N (default 1) adds N-1 nodes, <NODE_NAME>-2 ... <NODE_NAME>-N, each in a network
# namespace of its own, pikube-node-K, with its own containerd, kubelet and kube-proxy
# (its files in $STATE/nodes/<node>, its logs in $STATE/logs/<node>/<daemon>.log). The
# namespaces hang off a bridge in this machine's namespace, pikube-br0 on NODES_CIDR
# (172.31.250.0/24): this machine is .1, node K is .K (its eth0; veth pikube-vethK on the
# bridge, hairpin on). The machine's own node then takes the bridge address as its
# InternalIP, and kube-apiserver binds and advertises it (its certificate names it), so
# every namespace reaches it. Pods talk across nodes with no encapsulation and no NAT:
# each kubelet routes every other node's podCIDR (nodeipam's, from CLUSTER_CIDR) via that
# node's address on the bridge (host-gw). A namespace has no default route, so nothing
# from a node leaves the machine; a route for the Service range lets a node's own
# processes reach ClusterIPs. Rerunning is safe; a smaller N removes the nodes above it
# (their namespaces, files and Node objects). Switching between one node and several
# moves the apiserver's address: the cluster is stopped first and started again. One
# multi-node cluster per machine (the bridge and the namespaces have fixed names).
#
# `down` stops every daemon, removes the pods, the nodes' namespaces (and with them
# their veths, pod bridges, routes and nftables tables), the bridge, this machine's pod
# network rules, and restores ip_forward; the state (etcd, PKI, images) stays.
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
# the default route; with --nodes, the bridge address), NODES_CIDR (172.31.250.0/24, a
# /24), PIKUBE_OFFLINE (1: containerd never pulls from a registry; images must be
# imported, e.g. by hack/images.sh).
# Binaries: PIKUBE_PROFILE (release, the default, or debug) is the cargo profile built and
# run; debug builds in a fraction of a release (fat LTO) build's time, for development.
# PIKUBE_BIN_DIR runs the binaries in that folder as they are and builds nothing (e.g.
# PIKUBE_BIN_DIR=target/debug after `cargo build -p apiserver -p scheduler -p
# controller-manager -p kubelet -p kube-proxy -p pikubeadm`).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

usage_error() {
  printf 'error: %s\nusage: %s [up] [--nodes N] | down\n' "$1" "$0" >&2
  exit 64
}

ACTION=up
NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    up | down) ACTION=$1; shift ;;
    --nodes) [ $# -ge 2 ] || usage_error "--nodes needs a value"; NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
if ! [[ $NODES =~ ^[1-9][0-9]{0,2}$ ]] || [ "$NODES" -gt 254 ]; then
  usage_error "--nodes takes a number of nodes from 1 to 254, not '$NODES'"
fi

STATE=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.local}
ETCD_PORT=${ETCD_PORT:-2379}
APISERVER_PORT=${APISERVER_PORT:-6443}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-10257}
CLUSTER_CIDR=${CLUSTER_CIDR:-10.42.0.0/16}
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PIKUBE_OFFLINE=${PIKUBE_OFFLINE:-0}
PIKUBE_PROFILE=${PIKUBE_PROFILE:-release}
CONTAINERD_SOCK=$STATE/run/containerd.sock
SERVICE_CIDR=10.96.0.0/16
# Cluster DNS: kube-proxy answers on the kube-dns Service's address on every node (no
# DNS pods); the Service reserves the address, and the kubelet hands it to pods.
CLUSTER_DNS=10.96.0.10
PKI=$STATE/pki
# The extra nodes' link.
NODES_CIDR=${NODES_CIDR:-172.31.250.0/24}
[[ $NODES_CIDR =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.0/24$ ]] ||
  usage_error "NODES_CIDR must be a /24 such as 172.31.250.0/24, not '$NODES_CIDR'"
NODES_NET=${BASH_REMATCH[1]}
BRIDGE=pikube-br0
BRIDGE_IP=$NODES_NET.1
NODE_NETNS_PREFIX=pikube-node-

case "$PIKUBE_PROFILE" in
  release | debug) ;;
  *) usage_error "PIKUBE_PROFILE is release or debug, not '$PIKUBE_PROFILE'" ;;
esac
if [ -n "${PIKUBE_BIN_DIR:-}" ]; then
  BIN=$(cd "$PIKUBE_BIN_DIR" 2>/dev/null && pwd) || die "PIKUBE_BIN_DIR $PIKUBE_BIN_DIR is missing"
else
  BIN=${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/$PIKUBE_PROFILE
fi

if [ "$NODES" -gt 1 ]; then
  # Every node reaches this machine's node and the apiserver on the bridge.
  [ -z "${NODE_IP:-}" ] || [ "$NODE_IP" = "$BRIDGE_IP" ] ||
    usage_error "with --nodes, this machine's node is $BRIDGE_IP on $BRIDGE (NODE_IP=$NODE_IP)"
  NODE_IP=$BRIDGE_IP
  APISERVER_ADDRESS=$BRIDGE_IP
else
  # The node's address (the kubelet's InternalIP, in its serving certificate): the source
  # address of the default route, else loopback.
  NODE_IP=${NODE_IP:-$(ip -4 route get 10.255.255.255 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)}
  NODE_IP=${NODE_IP:-127.0.0.1}
  APISERVER_ADDRESS=127.0.0.1
fi
APISERVER_URL=https://$APISERVER_ADDRESS:$APISERVER_PORT
mkdir -p "$STATE/logs" "$STATE/run"

# A daemon's pid file and log are $STATE/run/<key>.pid and $STATE/logs/<key>.log; the key
# is the daemon's name for this machine's node and the control plane, <node>/<daemon>
# for an extra node's.
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

# Removes a node's pods, then stops its containerd: pods outlive containerd (their
# shims). Without the CNI DEL a sandbox's removal through CRI would run, the sandboxes'
# namespaces (their veths go with them), the CNI result cache entries and the IPs
# host-local handed out are removed here. $1: the containerd's key, $2: its socket, $3:
# host-local's directory.
remove_pods() {
  local key=$1 sock=$2 ipam_dir=$3 netns="" id ns
  if running "$key"; then
    # A sandbox's pause container has its network namespace's path in its spec.
    for id in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
      netns="$netns $(ctr -a "$sock" -n k8s.io containers info "$id" 2>/dev/null |
        grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' | head -n1 || true)"
      ctr -a "$sock" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
      ctr -a "$sock" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
      rm -f /var/lib/cni/results/*-"$id"-*
    done
  fi
  stop "$key"
  for ns in $netns; do ip netns del "$(basename "$ns")" 2>/dev/null || true; done
  rm -rf "$ipam_dir"
}

# Stops extra node $1's daemons (its folder in $STATE/nodes): kube-proxy, kubelet, pods,
# containerd. Its namespace stays (remove_netns).
stop_extra_node() {
  local dir=$1 name
  name=$(basename "$dir")
  stop "$name/kube-proxy"
  stop "$name/kubelet"
  remove_pods "$name/containerd" "$STATE/run/$name/containerd.sock" "$dir/kubelet/cni/networks"
}

# Kills what still runs in node namespace $1 (a shim, a daemon that would not stop) and
# deletes it, which takes its eth0 (and so its veth on the bridge), its pod bridge,
# routes, nftables tables and kube-proxy's DNS link with it. First its TCP connections
# finish closing: a closing socket whose peer has gone retransmits its FIN for minutes
# and keeps the namespace, and its veth, alive all that time.
remove_netns() {
  local ns=$1 pid
  [ -e "/run/netns/$ns" ] || return 0
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    log "killing $pid, left in $ns: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80)"
    kill -9 "$pid" 2>/dev/null || true
  done
  wait_for 10 bash -c "[ -z \"\$(nsenter --net=/run/netns/$ns ss -tanH exclude time-wait exclude listening)\" ]" ||
    log "connections in $ns still closing: $(nsenter "--net=/run/netns/$ns" ss -tanH exclude time-wait | head -n3)"
  ip netns del "$ns" 2>/dev/null || true
  log "removed network namespace $ns"
}

# IPv4 address $1 as an integer.
ip4_int() {
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

# Whether IPv4 address $1 lies in CIDR $2.
in_cidr() {
  local net=${2%/*} bits=${2#*/} mask
  mask=$(((0xffffffff << (32 - bits)) & 0xffffffff))
  [ $(($(ip4_int "$1") & mask)) = $(($(ip4_int "$net") & mask)) ]
}

# Pod network namespaces no process holds whose eth0 is in CLUSTER_CIDR (or gone): sandboxes of a
# containerd that died (or of a machine whose processes were all killed) before removing
# them. Their veths stay on a pod bridge and their addresses clash with new pods' (the
# IPs are handed out again), so a new pod on that node is unreachable.
remove_orphan_pod_netns() {
  local ns addr
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || continue
    addr=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | head -n1 || true)
    # (No eth0 at all: its veth went with the other end, a removed node namespace.)
    if [ -n "$addr" ] && ! in_cidr "${addr%/*}" "$CLUSTER_CIDR"; then continue; fi
    ip netns del "$ns" 2>/dev/null && log "removed $ns, a dead pod's network namespace ${addr:-(no eth0)}"
  done
}

# Whether a containerd of this cluster (this node's or an extra node's) runs.
any_containerd_running() {
  local pidfile
  for pidfile in "$STATE"/run/containerd.pid "$STATE"/run/*/containerd.pid; do
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
  done
  return 1
}

# Sandbox shm and rootfs mounts containerd left (every node's files are under $STATE).
unmount_state() {
  awk -v dir="$STATE/" 'index($5, dir) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

down() {
  local dir ns
  # Every daemon stops before the network goes, so their connections close while both
  # ends are still there: the extra nodes', this machine's node's, the control plane.
  for dir in "$STATE"/nodes/*/; do
    if [ -d "$dir" ]; then stop_extra_node "${dir%/}"; fi
  done
  stop kube-proxy
  # kube-proxy leaves its rules in place when it stops (as upstream): remove its tables.
  if [ -x "$BIN/kube-proxy" ]; then
    "$BIN/kube-proxy" --cleanup >>"$STATE/logs/kube-proxy.log" 2>&1 || true
  fi
  stop kubelet
  remove_pods containerd "$CONTAINERD_SOCK" "$STATE/kubelet/cni/networks"
  stop kube-controller-manager
  stop kube-scheduler
  stop kube-apiserver
  stop etcd
  rm -f "$STATE/run/addresses"
  # Pods whose containerd was gone before it could remove them.
  remove_orphan_pod_netns

  # The extra nodes' namespaces (also those whose folder is gone: a removed state folder).
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NODE_NETNS_PREFIX}[0-9]*$" || true); do
    remove_netns "$ns"
  done
  # (The kernel takes a namespace's veths down after `ip netns del` returns.)
  # shellcheck disable=SC2016 # expanded by the inner bash
  if ip link show cni0 >/dev/null 2>&1 &&
    wait_for 10 bash -c '[ -z "$(ls /sys/class/net/cni0/brif 2>/dev/null)" ]'; then
    ip link del cni0 2>/dev/null || true
  fi
  # The kubelet's pod network rules outlive it (as pods do): its nftables table and its
  # routes to other nodes' pods (routing protocol 150); nothing else is touched.
  nft delete table inet pikube-kubelet 2>/dev/null || true
  ip route flush proto 150 2>/dev/null || true
  unmount_state
  # The extra nodes' link, once every namespace (and so every veth) is gone.
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    wait_for 10 bash -c "[ -z \"\$(ls /sys/class/net/$BRIDGE/brif 2>/dev/null)\" ]" ||
      log "still on $BRIDGE: $(find "/sys/class/net/$BRIDGE/brif" -mindepth 1 -printf "%f ")"
    ip link del "$BRIDGE" 2>/dev/null || true
    log "removed bridge $BRIDGE"
  fi
  if [ -f "$STATE/run/ip_forward" ]; then
    sysctl -qw "net.ipv4.ip_forward=$(cat "$STATE/run/ip_forward")" || true
    rm -f "$STATE/run/ip_forward"
  fi
}

if [ "$ACTION" = down ]; then
  down
  log "cluster stopped (state kept in $STATE; remove it for a fresh start)"
  exit 0
fi

install_deps
if [ -z "${PIKUBE_BIN_DIR:-}" ]; then
  log "building ($PIKUBE_PROFILE)"
  profile_flag=()
  [ "$PIKUBE_PROFILE" = release ] && profile_flag=(--release)
  (cd "$PIKUBE_ROOT" && cargo build "${profile_flag[@]}" --quiet -p apiserver -p scheduler \
    -p controller-manager -p kubelet -p kube-proxy -p pikubeadm)
fi
for bin in kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy pikubeadm; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing (see PIKUBE_BIN_DIR in the header of $0)"
done
log "binaries from $BIN"

# An older local-up authenticated every daemon with static tokens ($STATE/tokens.csv) and
# let the apiserver sign its own certificate ($STATE/certs): stop what it started and drop
# its credentials. etcd's data, containerd's images and the logs stay.
if [ -e "$STATE/tokens.csv" ] || [ -d "$STATE/certs" ]; then
  log "replacing an older local-up's static tokens and self-signed certificates in $STATE"
  down
  rm -rf "$STATE/tokens.csv" "$STATE/certs"
  rm -f "$STATE"/{admin,kube-scheduler,kube-controller-manager,kubelet,kube-proxy}.kubeconfig
fi

# The apiserver's and this node's addresses move between one node (loopback, the default
# route's source) and several (the bridge): daemons started for the other layout (or by
# a local-up that did not record it) would keep the old ones, so they stop first.
addresses="apiserver=$APISERVER_ADDRESS node=$NODE_IP"
previous=$(cat "$STATE/run/addresses" 2>/dev/null || echo "not recorded")
if [ "$previous" != "$addresses" ] && compgen -G "$STATE/run/*.pid" >/dev/null; then
  log "the cluster's addresses change ($previous -> $addresses): stopping it first"
  down
fi

# With no containerd of ours running, no pod of ours is alive: a namespace of a pod is
# left from a cluster whose processes were killed (sandboxes being created need a
# running containerd).
any_containerd_running || remove_orphan_pod_netns

# The extra nodes: node K is <NODE_NAME>-K in namespace pikube-node-K at $NODES_NET.K.
extra_nodes=()
node_list="$NODE_NAME=$NODE_IP"
for ((k = 2; k <= NODES; k++)); do
  extra_nodes+=("$NODE_NAME-$k")
  node_list="$node_list,$NODE_NAME-$k=$NODES_NET.$k"
done

# The bridge the nodes' namespaces hang off; it holds the apiserver's address, so it
# comes first. Forwarding on: this machine routes between its pods and the bridge.
if [ "$NODES" -gt 1 ]; then
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  [ -f "$STATE/run/ip_forward" ] || cat /proc/sys/net/ipv4/ip_forward >"$STATE/run/ip_forward"
  sysctl -qw net.ipv4.ip_forward=1
fi

# The cluster's PKI, from pikubeadm (rcgen; rerunning keeps every key and renews only
# what expires or no longer matches): the CA (which also signs the apiserver's kubelet
# client certificate and the kubelet's serving certificate), the apiserver's serving
# certificate (for $APISERVER_ADDRESS), the ServiceAccount key pair, and a client
# certificate in a kubeconfig for the admin (system:masters) and for each daemon as the
# user upstream's default roles name (system:kube-scheduler,
# system:kube-controller-manager, system:kube-proxy, system:node:<node> in system:nodes,
# for every node).
log "writing the cluster's certificates and kubeconfigs (pikubeadm certs) to $PKI"
"$BIN/pikubeadm" certs --cert-dir "$PKI" --kubeconfig-dir "$STATE" --cluster-name pikube \
  --control-plane "$APISERVER_ADDRESS" --apiserver-bind-port "$APISERVER_PORT" --service-cidr "$SERVICE_CIDR" \
  --node "$node_list" >"$STATE/logs/pikubeadm.log" 2>&1 ||
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
  log "starting kube-apiserver on $APISERVER_ADDRESS:$APISERVER_PORT"
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$APISERVER_ADDRESS" --secure-port "$APISERVER_PORT" \
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
wait_for 60 admin_curl -fsS "$APISERVER_URL/readyz" ||
  die "kube-apiserver did not become ready; see $STATE/logs/kube-apiserver.log"
echo "$addresses" >"$STATE/run/addresses"

# Created only when missing: a second create is refused for its address (422, "provided IP
# is already allocated") before its name.
services=$APISERVER_URL/api/v1/namespaces/kube-system/services
code=$(admin_curl -sS -o /dev/null -w '%{http_code}' "$services/kube-dns")
if [ "$code" = 404 ]; then
  code=$(admin_curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' "$services" \
    -d '{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system","labels":{"k8s-app":"kube-dns"}},"spec":{"clusterIP":"'"$CLUSTER_DNS"'","selector":{"k8s-app":"kube-dns"},"ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}')
fi
case "$code" in 200 | 201 | 409) ;; *) die "creating the kube-dns Service failed (HTTP $code)" ;; esac

# Nodes of an earlier, larger --nodes: their namespaces and files go, and so do their Node
# objects (their pods are then deleted by the pod garbage collector).
for dir in "$STATE"/nodes/*/; do
  [ -d "$dir" ] || continue
  dir=${dir%/}
  name=$(basename "$dir")
  k=$(cat "$dir/index" 2>/dev/null || echo 0)
  [ "$name" = "$NODE_NAME-$k" ] && [ "$k" -le "$NODES" ] && continue
  log "removing node $name (not one of the $NODES nodes asked for)"
  stop_extra_node "$dir"
  remove_netns "$(cat "$dir/netns" 2>/dev/null || echo "$NODE_NETNS_PREFIX$k")"
  unmount_state
  code=$(admin_curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$APISERVER_URL/api/v1/nodes/$name")
  case "$code" in 200 | 202 | 404) ;; *) die "deleting Node $name failed (HTTP $code)" ;; esac
  rm -rf "$dir" "$STATE/run/$name"
done

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

cgroup_systemd=false
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && cgroup_systemd=true
cgroup_driver=cgroupfs
[ "$cgroup_systemd" = true ] && cgroup_driver=systemd

# Writes a node's containerd configuration: its own root, state, sockets and runc root
# (it shares the machine with the other nodes' and maybe a system containerd), cgroupfs
# unless PID 1 is systemd, the CNI config the kubelet writes, and the locally built pause
# image. $1: its folder, $2: its socket, $3: the CNI configuration folder.
write_containerd_config() {
  local dir=$1 sock=$2 cni_dir=$3 registry_config="" reg
  mkdir -p "$dir" "$cni_dir"
  if [ "$PIKUBE_OFFLINE" = 1 ]; then
    # Every registry resolves to a closed loopback port: a missing image fails at once.
    for reg in _default docker.io registry.k8s.io; do
      mkdir -p "$dir/certs.d/$reg"
      printf 'server = "http://127.0.0.1:1"\n\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n' \
        >"$dir/certs.d/$reg/hosts.toml"
    done
    registry_config="config_path = \"$dir/certs.d\""
  fi
  cat >"$dir/config.toml" <<CONFIG
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$dir/ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
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
  Root = "$dir/runc"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$cni_dir"
[plugins."io.containerd.grpc.v1.cri".registry]
  $registry_config
CONFIG
}

# Starts a node's containerd, images, kubelet and kube-proxy, each unless it runs.
# $1: node name, $2: its network namespace ("": this machine's), $3: its IP, $4: the key
# prefix of its daemons ("" or "<node>/"), $5: its containerd folder, $6: containerd's
# socket, $7: the CNI configuration folder, $8: the kubelet's root folder; the rest are
# extra kubelet flags.
start_node() {
  local name=$1 ns=$2 ip=$3 key=$4 ctrd=$5 sock=$6 cni_dir=$7 root=$8
  shift 8
  local where="" run=() pki=$PKI/nodes/$name
  if [ -n "$ns" ]; then
    where=" in network namespace $ns"
    # nsenter, not `ip netns exec`: that remounts /sys, and containerd's pods then find
    # no cgroup mount. nsenter execs the daemon, so $! is the daemon's pid.
    run=(nsenter "--net=/run/netns/$ns")
  fi
  mkdir -p "$STATE/logs/$key" "$STATE/run/$key"

  write_containerd_config "$ctrd" "$sock" "$cni_dir"
  if ! running "${key}containerd"; then
    log "starting containerd of $name on $sock$where"
    "${run[@]}" containerd --config "$ctrd/config.toml" >"$STATE/logs/${key}containerd.log" 2>&1 &
    echo $! >"$STATE/run/${key}containerd.pid"
  fi
  wait_for 30 ctr -a "$sock" version || die "containerd did not start; see $STATE/logs/${key}containerd.log"
  log "importing the local images (busybox:1.35, pause:3.10) into the containerd of $name"
  "$PIKUBE_ROOT/hack/images.sh" --address "$sock" >"$STATE/logs/${key}images.log" 2>&1 ||
    die "building or importing the images failed; see $STATE/logs/${key}images.log"

  if ! running "${key}kubelet"; then
    log "starting kubelet as node $name at $ip$where (healthz on 127.0.0.1:10248)"
    "${run[@]}" "$BIN/kubelet" --kubeconfig "$pki/kubelet.conf" --hostname-override "$name" \
      --node-ip "$ip" \
      --container-runtime-endpoint "unix://$sock" --root-dir "$root" \
      --cni-conf-dir "$cni_dir" --cgroup-driver "$cgroup_driver" \
      --cluster-dns "$CLUSTER_DNS" --cluster-domain cluster.local \
      --tls-cert-file "$pki/kubelet.crt" --tls-private-key-file "$pki/kubelet.key" \
      --anonymous-auth=false --authentication-token-webhook --authorization-mode Webhook \
      --client-ca-file "$PKI/ca.crt" "$@" \
      >"$STATE/logs/${key}kubelet.log" 2>&1 &
    echo $! >"$STATE/run/${key}kubelet.pid"
  fi
  wait_for 60 "${run[@]}" curl -fsS http://127.0.0.1:10248/healthz ||
    die "the kubelet of $name did not become healthy; see $STATE/logs/${key}kubelet.log"

  if ! running "${key}kube-proxy"; then
    log "starting kube-proxy of $name$where (metrics on 127.0.0.1:10249, healthz on 0.0.0.0:10256)"
    "${run[@]}" "$BIN/kube-proxy" --kubeconfig "$STATE/kube-proxy.conf" --hostname-override "$name" \
      --cluster-cidr "$CLUSTER_CIDR" --metrics-bind-address 127.0.0.1:10249 \
      --healthz-bind-address 0.0.0.0:10256 --enable-service-lb --enable-cluster-dns \
      >"$STATE/logs/${key}kube-proxy.log" 2>&1 &
    echo $! >"$STATE/run/${key}kube-proxy.pid"
  fi
  wait_for 60 "${run[@]}" curl -fsS http://127.0.0.1:10256/healthz ||
    die "kube-proxy of $name did not become healthy; see $STATE/logs/${key}kube-proxy.log"
}

# This machine's node.
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
start_node "$NODE_NAME" "" "$NODE_IP" "" "$STATE/containerd" "$CONTAINERD_SOCK" \
  "$STATE/cni/net.d" "$STATE/kubelet"

# Node K's namespace: eth0 at $NODES_NET.K on the bridge (through veth pikube-vethK,
# hairpin on: a NodePort whose endpoint is on the calling node would lose its first SYN),
# loopback up, forwarding on (a NodePort's traffic to a pod on another node passes
# through), and a route for the Service range on eth0 (no default route: a ClusterIP
# connection from the node itself needs a route before nftables rewrites its address;
# one that matches no Service stays on the link).
setup_node_netns() {
  local k=$1 ns=$NODE_NETNS_PREFIX$1 veth=pikube-veth$1
  [ -e "/run/netns/$ns" ] || ip netns add "$ns"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 2>/dev/null || true
    ip link add "$veth" type veth peer name eth0 netns "$ns"
  fi
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  bridge link set dev "$veth" hairpin on
  ip -n "$ns" addr replace "$NODES_NET.$k/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route replace "$SERVICE_CIDR" dev eth0
  nsenter "--net=/run/netns/$ns" sysctl -qw net.ipv4.ip_forward=1
}

for ((k = 2; k <= NODES; k++)); do
  name=$NODE_NAME-$k
  dir=$STATE/nodes/$name
  mkdir -p "$dir"
  echo "$k" >"$dir/index"
  echo "$NODE_NETNS_PREFIX$k" >"$dir/netns"
  setup_node_netns "$k"
  # Pod logs apart from this machine's /var/log/pods (a KubeletConfiguration field only).
  printf 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodLogsDir: %s\n' \
    "$dir/pod-logs" >"$dir/kubelet.yaml"
  start_node "$name" "$NODE_NETNS_PREFIX$k" "$NODES_NET.$k" "$name/" "$dir/containerd" \
    "$STATE/run/$name/containerd.sock" "$dir/cni/net.d" "$dir/kubelet" \
    --config "$dir/kubelet.yaml" --cert-dir "$dir/kubelet/pki"
done

# Ready, with a Lease its kubelet renewed since this run started (a Node keeps the status
# of before a restart until the node lifecycle controller finds its Lease stale).
node_ready() {
  admin_curl -fsS "$APISERVER_URL/api/v1/nodes/$1" |
    jq -e '[.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length == 1' &&
    admin_curl -fsS "$APISERVER_URL/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/$1" |
    jq -e --arg since "$started_at" '.spec.renewTime[0:19] >= $since[0:19]'
}
for name in "$NODE_NAME" "${extra_nodes[@]}"; do
  wait_for 120 node_ready "$name" || die "node $name did not become Ready; see its kubelet's log in $STATE/logs"
done

log "cluster is up: $NODES node(s) Ready ($NODE_NAME at $NODE_IP$(for k in "${!extra_nodes[@]}"; do
  printf ', %s at %s' "${extra_nodes[$k]}" "$NODES_NET.$((k + 2))"
done)); logs in $STATE/logs"
echo "export KUBECONFIG=$STATE/admin.conf"
