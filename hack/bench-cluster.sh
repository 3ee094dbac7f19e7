#!/usr/bin/env bash
# Issue 9's cluster benchmark, on a local cluster (hack/local-up.sh) in its own state
# directory. Prints measured figures:
#   - the time from running local-up.sh (binaries already built) to every node Ready;
#   - each daemon's resident memory (VmRSS, and PSS: shared pages split between the
#     processes mapping them) idle, and again with --pods pods running, with the sums the
#     issue sets targets for: apiserver + scheduler + controller-manager <= 64 MiB, and
#     kubelet + kube-proxy <= 40 MiB per node (etcd and containerd not counted);
#   - etcd writes per minute on the idle cluster (keys put and deleted, from etcd's own
#     counters; a transaction that writes is counted by its puts) and WAL fsyncs per
#     minute: what wears out an SD card.
#
# Usage: hack/bench-cluster.sh [--nodes N] [--pods P] [--idle-seconds S] [--settle-seconds S] [--keep]
#   --nodes N          nodes in the cluster (default 3; see local-up.sh --nodes)
#   --pods P           pods for the loaded measurement (default 100)
#   --idle-seconds S   how long the idle cluster is watched for etcd writes (default 60)
#   --settle-seconds S the pods' memory is measured again after that long (default 90:
#                      the apiserver's watch cache keeps events 75 s)
#   --keep             leave the cluster running afterwards
# Environment: PIKUBE_STATE_DIR (default .bench/ in the checkout), ETCD_PORT (default
# 2479, so that a cluster of hack/local-up.sh on the defaults can keep running; the other
# ports are local-up.sh's defaults), PIKUBE_BIN_DIR (binaries to run, default the release
# build, built first).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

nodes=3
pods=100
idle=60
settle=90
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="${2:?--nodes needs a number}"; shift 2 ;;
    --pods) pods="${2:?--pods needs a number}"; shift 2 ;;
    --idle-seconds) idle="${2:?--idle-seconds needs a number}"; shift 2 ;;
    --settle-seconds) settle="${2:?--settle-seconds needs a number}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-cluster.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
for n in "$nodes" "$pods" "$idle" "$settle"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench-cluster.sh: not a number: $n" >&2; exit 64; }
done

export PIKUBE_STATE_DIR=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.bench}
export ETCD_PORT=${ETCD_PORT:-2479}
export PIKUBE_OFFLINE=${PIKUBE_OFFLINE:-1}
STATE=$PIKUBE_STATE_DIR
KUBECTL=(kubectl --kubeconfig "$STATE/admin.conf")

if [ -z "${PIKUBE_BIN_DIR:-}" ]; then
  log "building the release binaries first (not timed)"
  (cd "$PIKUBE_ROOT" && cargo build --release --quiet -p apiserver -p scheduler \
    -p controller-manager -p kubelet -p kube-proxy -p pikubeadm)
fi

finish() {
  if [ "$keep" = 0 ]; then
    "$PIKUBE_ROOT/hack/local-up.sh" down >/dev/null 2>&1 || true
  fi
}
trap finish EXIT

# A fresh cluster every run: a previous run's Deployment and pods (on nodes that may be
# gone) would change what is measured.
"$PIKUBE_ROOT/hack/local-up.sh" down >/dev/null 2>&1 || true
rm -rf "$STATE"
log "starting a $nodes-node cluster (timed)"
start_ns=$(date +%s%N)
"$PIKUBE_ROOT/hack/local-up.sh" --nodes "$nodes" >"$STATE.up.log" 2>&1 ||
  die "local-up.sh failed; see $STATE.up.log"
wait_for 60 bash -c "[ \"\$(${KUBECTL[*]} get nodes --no-headers 2>/dev/null | awk '\$2 == \"Ready\"' | wc -l)\" -ge $nodes ]" ||
  die "not every node became Ready"
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

# Arithmetic on decimals (awk: bc is not everywhere).
calc() { awk "BEGIN {print $1}"; }

# kB of VmRSS and PSS of a pid.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# One table of every daemon local-up.sh started (its pid files), and the issue's sums.
memory_table() {
  local title=$1 file key pid rss pss cp_rss=0 cp_pss=0
  declare -A node_rss=() node_pss=()
  printf '\n%s\n%-40s %10s %10s\n' "$title" "daemon" "RSS MiB" "PSS MiB"
  while IFS= read -r file; do
    key=${file#"$STATE/run/"}
    key=${key%.pid}
    pid=$(cat "$file")
    kill -0 "$pid" 2>/dev/null || continue
    rss=$(rss_kb "$pid")
    pss=$(pss_kb "$pid")
    printf '%-40s %10.1f %10.1f\n' "$key" "$(calc "$rss / 1024")" "$(calc "$pss / 1024")"
    case "$key" in
      kube-apiserver|kube-scheduler|kube-controller-manager)
        cp_rss=$((cp_rss + rss)); cp_pss=$((cp_pss + pss)) ;;
      *kubelet|*kube-proxy)
        local node=${key%/*}
        [ "$node" = "$key" ] && node="(this machine)"
        node_rss[$node]=$(( ${node_rss[$node]:-0} + rss ))
        node_pss[$node]=$(( ${node_pss[$node]:-0} + pss )) ;;
    esac
  done < <(find "$STATE/run" -name '*.pid' | sort)
  printf '%-40s %10.1f %10.1f   (target: at most 64 MiB)\n' "apiserver+scheduler+controller-manager" \
    "$(calc "$cp_rss / 1024")" "$(calc "$cp_pss / 1024")"
  for node in "${!node_rss[@]}"; do
    printf '%-40s %10.1f %10.1f   (target: at most 40 MiB)\n' "kubelet+kube-proxy $node" \
      "$(calc "${node_rss[$node]} / 1024")" "$(calc "${node_pss[$node]} / 1024")"
  done
}

# The sum of etcd's counters named in $@ (Prometheus text, every label set).
etcd_counter() {
  curl -fsS "http://127.0.0.1:$ETCD_PORT/metrics" |
    awk -v names="$*" 'BEGIN {split(names, n, " "); for (i in n) want[n[i]] = 1}
      /^#/ {next}
      {name = $1; sub(/\{.*/, "", name); if (name in want) sum += $NF}
      END {printf "%d\n", sum}'
}

log "watching the idle cluster for ${idle}s"
writes0=$(etcd_counter etcd_mvcc_put_total etcd_mvcc_delete_total)
fsyncs0=$(etcd_counter etcd_disk_wal_fsync_duration_seconds_count)
t0=$(date +%s%N)
# Which keys are written: etcd's own watch over the same window.
etcdctl --endpoints "http://127.0.0.1:$ETCD_PORT" watch --prefix /registry/ >"$STATE/idle-writes.txt" 2>/dev/null &
keys_pid=$!
# A measurement window, not a synchronisation: the cluster is observed for that long.
sleep "$idle"
kill "$keys_pid" 2>/dev/null || true
wait "$keys_pid" 2>/dev/null || true
writes1=$(etcd_counter etcd_mvcc_put_total etcd_mvcc_delete_total)
fsyncs1=$(etcd_counter etcd_disk_wal_fsync_duration_seconds_count)
elapsed_s=$(calc "($(date +%s%N) - $t0) / 1000000000")
idle_table=$(memory_table "idle, $nodes nodes")

log "starting $pods pods"
"${KUBECTL[@]}" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench-pods
spec:
  replicas: $pods
  selector:
    matchLabels: {app: bench-pods}
  template:
    metadata:
      labels: {app: bench-pods}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sleep
        image: busybox:1.35
        imagePullPolicy: Never
        command: [sleep, "86400"]
EOF
pods_start=$(date +%s%N)
"${KUBECTL[@]}" wait deployment/bench-pods --for=jsonpath='{.status.readyReplicas}'="$pods" --timeout=900s >/dev/null ||
  die "the $pods pods did not all become ready"
pods_s=$(calc "($(date +%s%N) - $pods_start) / 1000000000")
loaded_table=$(memory_table "with $pods pods running, just Ready")
log "watching the $pods pods for ${settle}s"
# A measurement window, not a synchronisation: memory once the burst has settled.
sleep "$settle"
settled_table=$(memory_table "with $pods pods running, ${settle} s later")

echo
echo "== pikube cluster benchmark ($nodes nodes, $(uname -m), $(nproc) cores) =="
printf 'local-up.sh to %d nodes Ready (binaries built): %.1f s (target: at most 10 s for one node)\n' "$nodes" "$(calc "$ready_ms / 1000")"
printf 'etcd writes on the idle cluster: %.0f per minute (keys put or deleted over %.0f s)\n' \
  "$(calc "($writes1 - $writes0) * 60 / $elapsed_s")" "$elapsed_s"
printf 'etcd WAL fsyncs on the idle cluster: %.0f per minute\n' "$(calc "($fsyncs1 - $fsyncs0) * 60 / $elapsed_s")"
echo "idle writes per minute by key (etcdctl watch):"
grep '^/registry/' "$STATE/idle-writes.txt" | sort | uniq -c | sort -rn |
  awk -v s="$elapsed_s" '{printf "  %6.0f  %s\n", $1 * 60 / s, $2}'
printf '%d pods Ready in %.1f s\n' "$pods" "$pods_s"
echo "$idle_table"
echo "$loaded_table"
echo "$settled_table"
