#!/usr/bin/env bash
# End-to-end tests on a three-node local cluster (hack/local-up.sh --nodes 3: this
# machine and two nodes in network namespaces; real etcd, containerd, nftables, kubectl),
# the scenarios of issue 9, in order:
#   1. a Deployment of 3 replicas spread over the nodes behind a NodePort Service: every
#      node's IP answers on the NodePort;
#   2. a pod on one node reaches, by name through cluster DNS, a ClusterIP Service whose
#      pods are on the other nodes;
#   3. a rolling update of the Deployment with no failed request from a client polling
#      the Service throughout;
#   4. a DaemonSet runs one pod per node, a Job completes, a ConfigMap and a Secret reach
#      a pod;
#   5. kill -9 of each daemon in turn (apiserver, scheduler, controller-manager, a
#      kubelet, a kube-proxy), restarted as systemd would: nothing is lost and the
#      Service keeps answering;
#   6. a worker's network cut: it goes NotReady, its pods are replaced elsewhere after
#      their toleration, and it comes back Ready when the network returns;
#   7. etcd restarted: the cluster resumes without manual steps;
#   8. a second apiserver on the same etcd; the first killed: kubectl and every daemon
#      carry on through the second (component_base::failover), and the `kubernetes`
#      endpoints drop the dead one.
#
# Usage: hack/e2e.sh [--keep] [--only N[,N...]]
#   --keep      leave the cluster running at the end (hack/local-up.sh down stops it)
#   --only      run only these scenarios (they build on 1's workload, which always runs)
# Environment: PIKUBE_BIN_DIR (binaries; default: debug builds, built first),
# PIKUBE_STATE_DIR (default .e2e/ in the checkout), E2E_LOG_TAIL (on a failure, print
# that many last lines of every daemon's log; default 0). Run as root.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

keep=0
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1; shift ;;
    --only) only="${2:?--only needs scenario numbers}"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

export PIKUBE_STATE_DIR=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.e2e}
export PIKUBE_OFFLINE=1
export NODE_NAME=pi
STATE=$PIKUBE_STATE_DIR
if [ -z "${PIKUBE_BIN_DIR:-}" ]; then
  log "building the debug binaries"
  (cd "$PIKUBE_ROOT" && cargo build --quiet -p apiserver -p scheduler -p controller-manager \
    -p kubelet -p kube-proxy -p pikubeadm)
  export PIKUBE_BIN_DIR="${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/debug"
fi
NODES=(pi pi-2 pi-3)
NODE_IPS=(172.31.250.1 172.31.250.2 172.31.250.3)
NODE_PORT=30080
KUBECONFIG=$STATE/admin.conf
export KUBECONFIG
k() { kubectl "$@"; }

current="setup"
scenario() {
  current="$1: $2"
  printf '\n=== scenario %s\n' "$current" >&2
}
# The scenarios build on each other: the first failure ends the run.
fail() {
  printf 'e2e: FAIL in scenario %s: %s\n(logs: %s/logs)\n' "$current" "$*" "$STATE" >&2
  exit 1
}
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

finish() {
  local rc=$? f
  # On a failure, what each daemon said last (CI keeps no files).
  if [ "$rc" != 0 ] && [ "${E2E_LOG_TAIL:-0}" -gt 0 ] && [ -d "$STATE/logs" ]; then
    for f in "$STATE.up.log" $(find "$STATE/logs" -name '*.log' | sort); do
      [ -f "$f" ] || continue
      printf '\n--- last %s lines of %s\n' "$E2E_LOG_TAIL" "$f" >&2
      grep -v ' DEBUG ' "$f" | tail -n "$E2E_LOG_TAIL" | cut -c1-400 >&2
    done
  fi
  if [ "$keep" = 0 ]; then
    "$PIKUBE_ROOT/hack/local-up.sh" down >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap finish EXIT

# A fresh cluster every run: a previous run's workloads (spread, replicas, terminating
# pods) would change what the scenarios see. down first unmounts what containerd left.
"$PIKUBE_ROOT/hack/local-up.sh" down >/dev/null 2>&1 || true
rm -rf "$STATE"
mkdir -p "$STATE"
log "starting a 3-node cluster in $STATE"
"$PIKUBE_ROOT/hack/local-up.sh" --nodes 3 >"$STATE.up.log" 2>&1 ||
  die "local-up.sh --nodes 3 failed; see $STATE.up.log and $STATE/logs"
wait_for 60 kubectl get serviceaccount default -n default >/dev/null 2>&1 ||
  die "no default ServiceAccount"
# Ready nodes lose the not-ready taint a moment later (nodelifecycle): the spread of
# scenario 1 counts only untainted nodes.
# One line per node, its name then its taints' keys; a failed kubectl is not "no taints".
node_taints() { kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.taints[*].key}{"\n"}{end}'; }
untainted() {
  local taints
  taints=$(node_taints) || return 1
  [ "$(grep -c . <<<"$taints")" = 3 ] && [ -z "$(awk 'NF > 1' <<<"$taints")" ]
}
wait_for 60 untainted || die "nodes still tainted: $(node_taints)"

# The node a pod runs on.
node_of() { k get pod "$1" -o jsonpath='{.spec.nodeName}'; }
# HTTP GET from this machine; prints the body.
get() { curl -fsS --max-time 3 "$@"; }
# Runs a command in node K's network namespace (K = 2, 3) or here (K = 1).
on_node() {
  local idx=$1; shift
  if [ "$idx" = 1 ]; then "$@"; else nsenter "--net=/run/netns/pikube-node-$idx" "$@"; fi
}
# Whether the jsonpath $3 of object $1 $2 is $4.
field_is() { [ "$(k get "$1" "$2" -o jsonpath="$3")" = "$4" ]; }
web_pods() { [ "$(k get pods -l app=web --no-headers | wc -l)" = "$1" ]; }
ready_replicas() { k get deployment "$1" -o jsonpath='{.status.readyReplicas}'; }
node_ready() {
  [ "$(k get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = "$2" ]
}

# --- 1 ---------------------------------------------------------------------------
scenario 1 "a Deployment over three nodes behind a NodePort"
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      # Replaced soon when their node is cut off (scenario 6).
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      # One per node. nodeTaintsPolicy Honor: a node cut off (tainted unreachable) leaves
      # the skew count, so its replica can be replaced on a node that already has one
      # (with the default Ignore it stays Pending, upstream too).
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: busybox:1.35
        imagePullPolicy: Never
        env: [{name: VERSION, value: "1"}]
        # Serves its pod name and version; on SIGTERM it keeps serving 3 s more (the time
        # for every kube-proxy to drop it), then stops.
        command: [sh, -c, 'mkdir -p /www && echo "\$(hostname) v\$VERSION" >/www/index.html; httpd -f -p 8080 -h /www & pid=\$!; trap "sleep 3; kill \$pid; exit 0" TERM; wait']
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: $NODE_PORT}]
EOF
wait_for 180 field_is deployment web '{.status.readyReplicas}' 3 ||
  fail "web has $(ready_replicas web) of 3 replicas ready"
spread=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
[ "$spread" = 3 ] || fail "the 3 replicas run on $spread nodes, not 3"
for ip in "${NODE_IPS[@]}"; do
  wait_for 30 get "http://$ip:$NODE_PORT/" >/dev/null || fail "NodePort on $ip does not answer"
done
echo "web: 3 replicas on 3 nodes; NodePort $NODE_PORT answered on ${NODE_IPS[*]}" >&2

# --- 2 ---------------------------------------------------------------------------
if wanted 2; then
  scenario 2 "a pod reaches a Service on the other nodes by name"
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [pi-2, pi-3]}]
      containers:
      - name: echo
        image: busybox:1.35
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www']
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: pi
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox:1.35
    imagePullPolicy: Never
    command: [sleep, "86400"]
EOF
  wait_for 120 field_is deployment echo '{.status.readyReplicas}' 2 ||
    fail "echo is not ready"
  wait_for 60 kubectl wait pod/client --for=condition=Ready --timeout=1s >/dev/null 2>&1 || fail "client pod not ready"
  # Ready pods reach the Service's EndpointSlice and then pi's kube-proxy a moment later;
  # until then the ClusterIP refuses connections. (busybox 1.35's wget crashes with -T:
  # the timeout comes from timeout(1).)
  reach_echo() { answered=$(k exec client -- timeout 5 wget -qO- http://echo.default.svc.cluster.local/ 2>&1); }
  wait_for 30 reach_echo || fail "wget of echo by name from pod client failed: $answered"
  case "$answered" in
    echo-*) echo "client on pi reached $answered (on $(node_of "$answered")) by name" >&2 ;;
    *) fail "unexpected answer: $answered" ;;
  esac
  [ "$(node_of "$answered")" != pi ] || fail "answered from the client's own node"
fi

# --- 3 ---------------------------------------------------------------------------
if wanted 3; then
  scenario 3 "a rolling update with no failed request"
  cluster_ip=$(k get service web -o jsonpath='{.spec.clusterIP}')
  poll_log=$STATE/rolling-update.polls
  : >"$poll_log"
  rm -f "$STATE/rolling-update.stop"
  (
    while [ ! -e "$STATE/rolling-update.stop" ]; do
      if body=$(curl -sS --max-time 2 "http://$cluster_ip/" 2>&1); then
        echo "ok $body"
      else
        echo "FAILED $body"
      fi >>"$poll_log"
    done
  ) &
  poller=$!
  k set env deployment/web VERSION=2 >/dev/null
  k rollout status deployment/web --timeout=180s >/dev/null || fail "rollout did not finish"
  # Polls after the rollout reach only the new version.
  only_v2() { [ "$(tail -n 5 "$poll_log" | grep -c ' v2$')" = 5 ]; }
  wait_for 30 only_v2 || fail "the new version does not answer"
  touch "$STATE/rolling-update.stop"
  wait "$poller" || true
  rm -f "$STATE/rolling-update.stop"
  total=$(wc -l <"$poll_log")
  failed=$(grep -c '^FAILED' "$poll_log" || true)
  echo "rolling update: $total requests, $failed failed" >&2
  [ "$failed" = 0 ] || fail "$failed of $total requests failed: $(grep -m3 '^FAILED' "$poll_log" | tr '\n' ' ')"
  [ "$total" -ge 20 ] || fail "only $total requests were made"
fi

# --- 4 ---------------------------------------------------------------------------
if wanted 4; then
  scenario 4 "a DaemonSet, a Job, a ConfigMap and a Secret"
  k create configmap settings --from-literal=colour=blue >/dev/null
  k create secret generic password --from-literal=word=swordfish >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: agent, image: busybox:1.35, imagePullPolicy: Never, command: [sleep, "86400"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: sum}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: sum, image: busybox:1.35, imagePullPolicy: Never, command: [sh, -c, 'test \$((6 * 7)) = 42']}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - name: reader
    image: busybox:1.35
    imagePullPolicy: Never
    command: [sh, -c, 'echo "\$COLOUR \$(cat /secret/word)"']
    env: [{name: COLOUR, valueFrom: {configMapKeyRef: {name: settings, key: colour}}}]
    volumeMounts: [{name: secret, mountPath: /secret}]
  volumes: [{name: secret, secret: {secretName: password}}]
EOF
  wait_for 120 field_is daemonset agent '{.status.numberReady}' 3 ||
    fail "the DaemonSet has $(k get daemonset agent -o jsonpath='{.status.numberReady}') of 3 pods ready"
  on=$(k get pods -l app=agent -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | tr '\n' ' ')
  [ "$on" = "pi pi-2 pi-3 " ] || fail "DaemonSet pods on: $on"
  k wait job/sum --for=condition=Complete --timeout=120s >/dev/null || fail "the Job did not complete"
  wait_for 60 field_is pod reader '{.status.phase}' Succeeded ||
    fail "pod reader did not succeed"
  [ "$(k logs reader)" = "blue swordfish" ] || fail "reader printed '$(k logs reader)'"
  echo "DaemonSet on: $on; Job complete; reader printed: $(k logs reader)" >&2
fi

# --- 5 ---------------------------------------------------------------------------
# Restarts a daemon as systemd's Restart=always would: same command line, same network
# namespace, same log. $1: its key in $STATE/run (kube-apiserver, pi-2/kubelet, ...).
restart_daemon() {
  local key=$1 pid cmd=() ns=""
  pid=$(cat "$STATE/run/$key.pid")
  mapfile -d '' cmd <"$STATE/run/$key.cmdline"
  [ -f "$STATE/run/$key.netns" ] && ns=$(cat "$STATE/run/$key.netns")
  if [ -n "$ns" ]; then
    nsenter "--net=/run/netns/$ns" "${cmd[@]}" >>"$STATE/logs/$key.log" 2>&1 &
  else
    "${cmd[@]}" >>"$STATE/logs/$key.log" 2>&1 &
  fi
  echo $! >"$STATE/run/$key.pid"
  log "restarted $key (was $pid, now $!)"
}
# Kills a daemon with SIGKILL, after noting how to start it again.
kill_daemon() {
  local key=$1 pid node
  pid=$(cat "$STATE/run/$key.pid")
  cp "/proc/$pid/cmdline" "$STATE/run/$key.cmdline"
  rm -f "$STATE/run/$key.netns"
  node=${key%/*}
  if [ "$node" != "$key" ]; then
    cat "$STATE/nodes/$node/netns" >"$STATE/run/$key.netns"
  fi
  kill -9 "$pid"
  wait_for 10 bash -c "! kill -0 $pid 2>/dev/null" || true
}
# Whether web answers on the NodePort of nodes $@ (indexes in NODE_IPS; default pi, pi-3).
serving() {
  local i idx=("$@")
  [ $# -gt 0 ] || idx=(0 2)
  for i in "${idx[@]}"; do
    get "http://${NODE_IPS[$i]}:$NODE_PORT/" >/dev/null || return 1
  done
}

if wanted 5; then
  scenario 5 "kill -9 each daemon in turn"
  uids_before=$(k get pods -l app=web -o jsonpath='{.items[*].metadata.uid}')
  for key in kube-apiserver kube-scheduler kube-controller-manager pi-2/kubelet pi-3/kube-proxy; do
    kill_daemon "$key"
    # Running pods keep serving while the daemon is down.
    serving || fail "the NodePort stopped answering with $key down"
    restart_daemon "$key"
    case "$key" in
      kube-apiserver) wait_for 60 kubectl get --raw /readyz >/dev/null 2>&1 || fail "the apiserver did not come back" ;;
      */kubelet) wait_for 60 node_ready pi-2 True ||
        fail "pi-2 is not Ready after its kubelet restarted" ;;
    esac
    serving || fail "the NodePort does not answer after $key restarted"
  done
  # Nothing lost: the same pods, and the controllers and scheduler still act.
  [ "$(k get pods -l app=web -o jsonpath='{.items[*].metadata.uid}')" = "$uids_before" ] ||
    fail "web's pods changed while the daemons restarted"
  k get configmap settings >/dev/null || fail "the ConfigMap is gone"
  k scale deployment/web --replicas=4 >/dev/null
  wait_for 120 field_is deployment web '{.status.readyReplicas}' 4 ||
    fail "scaling to 4 after the restarts did not happen"
  k scale deployment/web --replicas=3 >/dev/null
  wait_for 120 web_pods 3 || fail "scaling back to 3 did not happen"
  echo "every daemon killed and restarted; web's pods unchanged and serving" >&2
fi

# --- 6 ---------------------------------------------------------------------------
# Three web pods run and are ready, none of them on node $1.
web_moved_off() {
  local elsewhere
  elsewhere=$(k get pods -l app=web \
    -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{"\n"}{end}' | grep -vcx "$1")
  [ "$elsewhere" -ge 3 ] && field_is deployment web '{.status.readyReplicas}' 3
}

if wanted 6; then
  scenario 6 "a worker cut off from the network"
  ip link set pikube-veth3 down
  wait_for 120 node_ready pi-3 Unknown || fail "pi-3 did not go NotReady (Unknown)"
  # Its web pod is replaced on the other nodes after its 5 s toleration.
  wait_for 120 web_moved_off pi-3 ||
    fail "web was not rescheduled off pi-3"
  serving 0 1 || fail "web stopped serving on pi and pi-2 with pi-3 cut off"
  ip link set pikube-veth3 up
  wait_for 120 node_ready pi-3 True || fail "pi-3 did not come back Ready"
  wait_for 60 field_is node pi-3 '{.spec.taints[*].key}' '' || fail "pi-3 kept its taints"
  # Scenario 4's DaemonSet, when it ran.
  if k get daemonset agent >/dev/null 2>&1; then
    wait_for 120 field_is daemonset agent '{.status.numberReady}' 3 ||
      fail "the DaemonSet pod on pi-3 is not ready again"
  fi
  echo "pi-3 went Unknown, web moved off it, and pi-3 came back Ready" >&2
fi

# --- 7 ---------------------------------------------------------------------------
if wanted 7; then
  scenario 7 "etcd restarted"
  kill_daemon etcd
  restart_daemon etcd
  wait_for 60 kubectl get --raw /readyz >/dev/null 2>&1 || fail "the apiserver is not ready after etcd restarted"
  k create configmap after-etcd --from-literal=k=v >/dev/null || fail "no write after etcd restarted"
  k scale deployment/web --replicas=4 >/dev/null
  wait_for 120 field_is deployment web '{.status.readyReplicas}' 4 ||
    fail "the controllers did not act after etcd restarted"
  for n in "${NODES[@]}"; do node_ready "$n" True || fail "$n is not Ready after etcd restarted"; done
  k scale deployment/web --replicas=3 >/dev/null
  echo "etcd restarted; writes, controllers and nodes carried on" >&2
fi

# --- 8 ---------------------------------------------------------------------------
if wanted 8; then
  scenario 8 "two apiservers; the first killed"
  second=172.31.250.254
  ip addr replace "$second/24" dev pikube-br0
  pid=$(cat "$STATE/run/kube-apiserver.pid")
  mapfile -d '' cmd <"/proc/$pid/cmdline"
  for i in "${!cmd[@]}"; do
    case "${cmd[$i]}" in --bind-address) cmd[i + 1]=$second ;; esac
  done
  "${cmd[@]}" --advertise-address "$second" >"$STATE/logs/kube-apiserver-2.log" 2>&1 &
  echo $! >"$STATE/run/kube-apiserver-2.pid"
  second_kubectl() { kubectl --server "https://$second:6443" --tls-server-name "${NODE_IPS[0]}" "$@"; }
  endpoints() { second_kubectl get endpoints kubernetes -o jsonpath='{.subsets[*].addresses[*].ip}'; }
  endpoints_are() { [ "$(endpoints)" = "$*" ]; }
  wait_for 60 endpoints_are "${NODE_IPS[0]}" "$second" ||
    fail "the kubernetes endpoints do not list both apiservers: $(endpoints)"
  # Every daemon reads the endpoints every 15 s (component_base::failover::REFRESH_PERIOD)
  # and logs the apiservers it may fail over to.
  for log_file in kube-scheduler kube-controller-manager kubelet kube-proxy pi-2/kubelet pi-2/kube-proxy pi-3/kubelet pi-3/kube-proxy; do
    wait_for 60 grep -q "apiservers to fail over to.*$second:6443" "$STATE/logs/$log_file.log" ||
      fail "$log_file has not learnt of the second apiserver"
  done
  kill -9 "$pid"
  rm -f "$STATE/run/kube-apiserver.pid"
  wait_for 60 endpoints_are "$second" ||
    fail "the dead apiserver stays in the kubernetes endpoints: $(endpoints)"
  # The daemons carry on: a new Deployment is scheduled, its pods created and started,
  # and its Service programmed on every node.
  second_kubectl create deployment after-failover --image=busybox:1.35 --replicas=3 -- \
    sh -c 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
  second_kubectl expose deployment after-failover --port 80 --target-port 8080 --type NodePort >/dev/null
  after_failover_ready() { [ "$(second_kubectl get deployment after-failover -o jsonpath='{.status.readyReplicas}')" = 3 ]; }
  wait_for 180 after_failover_ready ||
    fail "after-failover did not become ready through the second apiserver"
  port=$(second_kubectl get service after-failover -o jsonpath='{.spec.ports[0].nodePort}')
  for ip in "${NODE_IPS[@]}"; do
    wait_for 60 get "http://$ip:$port/" >/dev/null || fail "after-failover's NodePort on $ip does not answer"
  done
  echo "the first apiserver killed: kubectl, scheduler, controllers, kubelets and kube-proxies carried on through $second" >&2
  kill "$(cat "$STATE/run/kube-apiserver-2.pid")" 2>/dev/null || true
  rm -f "$STATE/run/kube-apiserver-2.pid"
  ip addr del "$second/24" dev pikube-br0 2>/dev/null || true
fi

echo "e2e: every scenario run passed" >&2
