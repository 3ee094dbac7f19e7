#!/usr/bin/env bash
# Checks a running cluster of `hack/local-up.sh [--nodes N]` as a user would, with kubectl
# and the admin kubeconfig:
#   - every node is Ready;
#   - a Deployment of one busybox:1.35 `httpd` per node (topologySpreadConstraints, maxSkew
#     1 over kubernetes.io/hostname, DoNotSchedule) puts a pod on every node; each pod
#     serves the name of its node;
#   - from a pod on every node: each other node's pod by pod IP, and the ClusterIP
#     Service, until every node's pod has answered through it;
#   - from every node itself (its network namespace; this machine for its own node): the
#     ClusterIP Service, and the NodePort Service on every node's InternalIP, until every
#     node's pod has answered through it.
# It removes what it made (namespace local-up-check), also when a check fails.
#
# usage: hack/local-up-check.sh   (as root; the cluster must be up)
# Environment: PIKUBE_STATE_DIR (as local-up.sh's), KUBECTL (default kubectl on PATH).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

STATE=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.local}
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
NS=local-up-check
[ -n "$KUBECTL" ] || die "kubectl is missing (set KUBECTL)"
[ -f "$STATE/admin.conf" ] || die "$STATE/admin.conf is missing: is the cluster of $STATE up?"
[ "$(id -u)" -eq 0 ] || die "run as root (it enters the nodes' network namespaces)"
k() { "$KUBECTL" --kubeconfig "$STATE/admin.conf" "$@"; }

failed=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failed=1; }
pass() { printf 'ok: %s\n' "$*"; }
cleanup() {
  k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The nodes: name, InternalIP.
mapfile -t nodes < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
[ "${#nodes[@]}" -gt 0 ] || die "no nodes"
declare -A node_ip node_netns
for line in "${nodes[@]}"; do
  node_ip[${line%% *}]=${line#* }
done
# An extra node's namespace, from local-up's files ("" for this machine's node).
for name in "${!node_ip[@]}"; do
  node_netns[$name]=$(cat "$STATE/nodes/$name/netns" 2>/dev/null || true)
done
count=${#node_ip[@]}
echo "nodes ($count):"
k get nodes -o wide

for name in "${!node_ip[@]}"; do
  ready=$(k get node "$name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
  if [ "$ready" = True ]; then pass "node $name is Ready"; else fail "node $name is not Ready ($ready)"; fi
done

k delete namespace "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
k create namespace "$NS" >/dev/null
k apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: $count
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: web}
      containers:
      - name: httpd
        image: docker.io/library/busybox:1.35
        imagePullPolicy: Never
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        command: ["sh", "-c", "mkdir -p /www && echo \$NODE_NAME > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web-nodeport
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
EOF

all_ready() {
  [ "$(k get deployment web -n "$NS" -o 'jsonpath={.status.readyReplicas}')" = "$count" ]
}
wait_for 180 all_ready || {
  k get pods -n "$NS" -o wide >&2
  die "the Deployment's $count pods did not become Ready"
}
k get pods -n "$NS" -o wide
declare -A pod_on pod_ip
while read -r pod node ip; do
  pod_on[$node]=$pod
  pod_ip[$node]=$ip
done < <(k get pods -n "$NS" -l app=web -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.nodeName}{" "}{.status.podIP}{"\n"}{end}')
for name in "${!node_ip[@]}"; do
  if [ -n "${pod_on[$name]:-}" ]; then pass "a pod on $name (${pod_on[$name]}, ${pod_ip[$name]})"; else fail "no pod on node $name"; fi
done

cluster_ip=$(k get service web -n "$NS" -o 'jsonpath={.spec.clusterIP}')
node_port=$(k get service web-nodeport -n "$NS" -o 'jsonpath={.spec.ports[0].nodePort}')
echo "Service web: ClusterIP $cluster_ip:80; Service web-nodeport: NodePort $node_port"

# Asks `$@ URL` (a fetch command) for URL until every node's pod has answered (the Service
# picks endpoints at random), at most 20 tries per node.
answers_from_every_node() {
  local url=$1; shift
  local seen=" " tries=$((20 * count)) answer
  while [ "$tries" -gt 0 ]; do
    tries=$((tries - 1))
    answer=$("$@" "$url" 2>/dev/null || true)
    [ -n "$answer" ] && [[ $seen != *" $answer "* ]] && seen="$seen$answer "
    [ "$(wc -w <<<"$seen")" -eq "$count" ] && { echo "$seen"; return 0; }
  done
  echo "$seen"
  return 1
}
in_pod() { k exec -n "$NS" "$1" -- timeout 5 wget -qO- "$2"; }
# From the node whose namespace's nsenter prefix is in $run (empty: this machine).
run=()
fetch() { "${run[@]}" curl -fsS --max-time 5 "$1"; }

for from in "${!pod_on[@]}"; do
  pod=${pod_on[$from]}
  for to in "${!pod_ip[@]}"; do
    [ "$to" = "$from" ] && continue
    answer=$(in_pod "$pod" "http://${pod_ip[$to]}:8080/" 2>&1 || true)
    if [ "$answer" = "$to" ]; then
      pass "pod on $from -> pod on $to by pod IP ${pod_ip[$to]}"
    else
      fail "pod on $from -> pod IP ${pod_ip[$to]} on $to: '$answer'"
    fi
  done
  if seen=$(answers_from_every_node "http://$cluster_ip/" in_pod "$pod"); then
    pass "pod on $from -> ClusterIP $cluster_ip: answers from every node's pod:$seen"
  else
    fail "pod on $from -> ClusterIP $cluster_ip: answers only from:$seen"
  fi
done

for from in "${!node_ip[@]}"; do
  ns=${node_netns[$from]}
  run=()
  [ -z "$ns" ] || run=(nsenter "--net=/run/netns/$ns")
  where=${ns:-this machine}
  if seen=$(answers_from_every_node "http://$cluster_ip/" fetch); then
    pass "node $from ($where) -> ClusterIP $cluster_ip: answers from every node's pod:$seen"
  else
    fail "node $from ($where) -> ClusterIP $cluster_ip: answers only from:$seen"
  fi
  for to in "${!node_ip[@]}"; do
    url="http://${node_ip[$to]}:$node_port/"
    if seen=$(answers_from_every_node "$url" fetch); then
      pass "node $from ($where) -> NodePort on $to ($url): answers from every node's pod:$seen"
    else
      fail "node $from ($where) -> NodePort on $to ($url): answers only from:$seen"
    fi
  done
done

if [ "$failed" -ne 0 ]; then
  die "some checks failed"
fi
echo "local-up-check: ok ($count nodes)"
