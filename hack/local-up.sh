#!/usr/bin/env bash
# Brings up a local pikube cluster: etcd, kube-apiserver, kube-scheduler and
# kube-controller-manager (the other daemons join as they land). Installs what is missing
# first. `hack/local-up.sh down` stops it. Every daemon logs to $STATE/logs/<daemon>.log.
#
# Environment: PIKUBE_STATE_DIR (default .local/ in the checkout), ETCD_PORT (2379),
# APISERVER_PORT (6443), SCHEDULER_PORT (10259), CONTROLLER_MANAGER_PORT (10257),
# CLUSTER_CIDR (10.42.0.0/16).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STATE=${PIKUBE_STATE_DIR:-$PIKUBE_ROOT/.local}
ETCD_PORT=${ETCD_PORT:-2379}
APISERVER_PORT=${APISERVER_PORT:-6443}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-10257}
CLUSTER_CIDR=${CLUSTER_CIDR:-10.42.0.0/16}
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
(cd "$PIKUBE_ROOT" && cargo build --release --quiet -p apiserver -p scheduler -p controller-manager)
BIN=$PIKUBE_ROOT/target/release

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

# One static token per user (--token-auth-file): the admin, and each daemon as the user
# upstream's bootstrap RBAC names.
new_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ensure_token() { # user uid groups
  touch "$STATE/tokens.csv"
  chmod 600 "$STATE/tokens.csv"
  grep -q ",$1,$2" "$STATE/tokens.csv" && return 0
  if [ -n "$3" ]; then
    printf '%s,%s,%s,"%s"\n' "$(new_token)" "$1" "$2" "$3" >>"$STATE/tokens.csv"
  else
    printf '%s,%s,%s\n' "$(new_token)" "$1" "$2" >>"$STATE/tokens.csv"
  fi
}
token_of() { grep ",$1,$2" "$STATE/tokens.csv" | cut -d, -f1 | head -n1; }
ensure_token admin admin system:masters
ensure_token system:kube-scheduler system:kube-scheduler ""
ensure_token system:kube-controller-manager system:kube-controller-manager ""

if ! running kube-apiserver; then
  log "starting kube-apiserver on 127.0.0.1:$APISERVER_PORT"
  "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --cert-dir "$STATE/certs" \
    --token-auth-file "$STATE/tokens.csv" --service-cluster-ip-range 10.96.0.0/16 \
    >"$STATE/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$STATE/run/kube-apiserver.pid"
fi
wait_for 60 curl -fsSk "https://127.0.0.1:$APISERVER_PORT/readyz" || die "kube-apiserver did not become ready; see $STATE/logs/kube-apiserver.log"

ca=$(base64 -w0 <"$STATE/certs/ca.crt")
write_kubeconfig() { # file user token
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: pikube
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: pikube
  context:
    cluster: pikube
    user: $2
current-context: pikube
KUBECONFIG
  chmod 600 "$1"
}
write_kubeconfig "$STATE/admin.kubeconfig" admin "$(token_of admin admin)"
write_kubeconfig "$STATE/kube-scheduler.kubeconfig" system:kube-scheduler "$(token_of system:kube-scheduler system:kube-scheduler)"
write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager \
  "$(token_of system:kube-controller-manager system:kube-controller-manager)"

if ! running kube-scheduler; then
  log "starting kube-scheduler (health and metrics on 127.0.0.1:$SCHEDULER_PORT)"
  "$BIN/kube-scheduler" --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$STATE/certs/kube-scheduler" \
    >"$STATE/logs/kube-scheduler.log" 2>&1 &
  echo $! >"$STATE/run/kube-scheduler.pid"
fi
wait_for 60 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/readyz" || die "kube-scheduler did not become ready; see $STATE/logs/kube-scheduler.log"

if ! running kube-controller-manager; then
  log "starting kube-controller-manager (health and metrics on 127.0.0.1:$CONTROLLER_MANAGER_PORT)"
  "$BIN/kube-controller-manager" --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --cert-dir "$STATE/certs/kube-controller-manager" --cluster-cidr "$CLUSTER_CIDR" \
    >"$STATE/logs/kube-controller-manager.log" 2>&1 &
  echo $! >"$STATE/run/kube-controller-manager.pid"
fi
wait_for 60 curl -fsSk "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/readyz" ||
  die "kube-controller-manager did not become ready; see $STATE/logs/kube-controller-manager.log"

log "cluster is up; logs in $STATE/logs"
echo "export KUBECONFIG=$STATE/admin.kubeconfig"
