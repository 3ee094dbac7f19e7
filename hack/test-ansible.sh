#!/usr/bin/env bash
# Checks deploy/ansible: `ansible-playbook --syntax-check`, `ansible-lint` (production
# profile), renders the HA variant's etcd and apiserver flags (three control planes) and
# checks them, then rolls pikube out for real to this machine (connection local) as a
# one-host cluster, twice, and fails unless the second run changes nothing. Then it
# starts what the playbook installed, checks that etcd serves TLS only and refuses clients
# without a certificate of its CA, and that kubectl, with the admin kubeconfig the
# playbook installed, sees the node Ready and a pod Running on it.
#
# Why the test starts the daemons itself: PID 1 is not systemd on the machines this runs
# on (containers, CI), so the run sets pikube_manage_services=false and the playbook
# installs the units, binaries, env files, PKI and containerd configuration without
# starting anything. The test then does what systemd would: for each installed unit it
# reads /etc/pikube/<daemon>.env and runs the unit's ExecStart line with those variables
# (as systemd expands an unquoted $VAR: split at whitespace). What is not covered so is
# systemd itself (enable, start, Type=notify, restart handlers): those tasks are skipped.
#
# Everything runs in a network namespace of its own (pikube-ansible, node address
# 172.31.251.10) with containerd, etcd and the kubelet in a scratch folder, so a cluster
# of hack/local-up.sh on this machine's loopback ports is not disturbed. containerd never pulls (pikube_offline): the pause and busybox
# images come from hack/images.sh. The playbook's installed files (/usr/local/bin/kube-*,
# /etc/pikube, /etc/kubernetes, the units, sysctl and module files) and everything started
# are removed at the end; the test refuses to run over an existing install.
#
# Environment: PIKUBE_BIN_DIR (default target/release; build with `cargo build --release
# -p apiserver -p scheduler -p controller-manager -p kubelet -p kube-proxy -p pikubeadm`),
# KUBECTL (default /usr/lib/google-cloud-sdk/bin/kubectl.1.32, else kubectl on PATH).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ANSIBLE_DIR=$PIKUBE_ROOT/deploy/ansible
BIN=${PIKUBE_BIN_DIR:-$PIKUBE_ROOT/target/release}
KUBECTL=${KUBECTL:-/usr/lib/google-cloud-sdk/bin/kubectl.1.32}
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl || true)
NS=pikube-ansible
NODE=pikube-ansible
NODE_IP=172.31.251.10
DAEMONS=(kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy)
UNITS=(etcd "${DAEMONS[@]}")
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0

[ "$(id -u)" -eq 0 ] || die "run as root: the playbook installs to /usr/local/bin and /etc"
for tool in ansible-playbook ansible-lint nsenter curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (hack/test.sh installs ansible and ansible-lint)"
done
[ -n "$KUBECTL" ] || die "kubectl is missing (set KUBECTL)"
BIN=$(cd "$BIN" 2>/dev/null && pwd) || die "${PIKUBE_BIN_DIR:-target/release} is missing: build first (see the header of $0)"
for bin in "${DAEMONS[@]}" pikubeadm; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing: build the release binaries first (see the header of $0)"
done

cd "$ANSIBLE_DIR"
log "ansible-playbook --syntax-check"
ansible-playbook -i inventory/example.ini site.yml --syntax-check
log "ansible-lint (production profile)"
ansible-lint --nocolor -p --profile production site.yml

# A real install on this machine must not be overwritten (nor removed by the cleanup).
for path in /etc/pikube /etc/kubernetes "${DAEMONS[@]/#//usr/local/bin/}"; do
  [ ! -e "$path" ] || die "$path exists: this machine has a pikube install the test would overwrite"
done

WORK=$(mktemp -d /tmp/pikube-ansible.XXXXXX)
LOGS=$WORK/logs
CTRD=$WORK/containerd
SOCK=$CTRD/containerd.sock
started=()
passed=0
trap cleanup EXIT
mkdir -p "$LOGS" "$WORK/bin"
# A snapshot of the binaries: a build finishing between the two runs must not count as
# the playbook changing something.
for bin in "${DAEMONS[@]}" pikubeadm; do cp "$BIN/$bin" "$WORK/bin/"; done

in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
kubectl_admin() { in_ns "$KUBECTL" --kubeconfig /etc/kubernetes/admin.conf "$@"; }

stop_pid() {
  local name=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  wait_for 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  log "stopped $name ($pid)"
}

cleanup() {
  set +e
  local i pid name netns=""
  # In reverse order of start: kube-proxy, kubelet, containerd (after its pods), ...
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    name=${started[$i]%%:*}
    pid=${started[$i]#*:}
    if [ "$name" = containerd ]; then
      # Pods outlive containerd (their shims): remove them first, noting their sandboxes'
      # network namespaces, which containerd names in /var/run/netns.
      for id in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
        netns="$netns $(ctr -a "$SOCK" -n k8s.io containers info "$id" 2>/dev/null |
          grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' | head -n1)"
        ctr -a "$SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1
        ctr -a "$SOCK" -n k8s.io containers rm "$id" >/dev/null 2>&1
      done
    fi
    stop_pid "$name" "$pid"
  done
  for ns in $netns; do ip netns del "$(basename "$ns")" 2>/dev/null; done
  # Sandbox shm and rootfs mounts containerd left under the scratch folder.
  awk -v dir="$WORK/" 'index($5, dir) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  # Whatever still runs in the node's namespace was started here (a shim, a daemon that
  # would not stop).
  for pid in $(ip netns pids "$NS" 2>/dev/null); do
    log "killing $pid, left in $NS: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80)"
    kill -9 "$pid" 2>/dev/null
  done
  # The node's namespace takes its pod bridge, routes and nftables tables (the kubelet's
  # inet pikube-kubelet, kube-proxy's) with it.
  ip netns del "$NS" 2>/dev/null
  # What the playbook installed.
  rm -rf /etc/pikube /etc/kubernetes /etc/sysctl.d/99-pikube.conf /etc/modules-load.d/pikube.conf
  for unit in "${UNITS[@]}"; do rm -f "/etc/systemd/system/$unit.service"; done
  for d in "${DAEMONS[@]}"; do rm -f "/usr/local/bin/$d"; done
  if [ "$passed" = 1 ]; then
    rm -rf "$WORK"
  else
    local keep; keep=$(mktemp -d /tmp/pikube-ansible-logs.XXXXXX)
    cp -a "$LOGS/." "$keep/" 2>/dev/null
    rm -rf "$WORK"
    echo "test-ansible: FAILED; logs kept in $keep" >&2
  fi
}

# The HA variant (three control planes), rendered only (one machine cannot hold three
# control planes' /etc): each etcd member lists all three and serves its own address,
# each apiserver lists every member and advertises its own address.
log "rendering the HA variant's etcd and kube-apiserver flags (three control planes)"
mkdir -p "$WORK/ha"
cat >"$WORK/ha/inventory.ini" <<EOF
[control_plane]
cp-1 ansible_host=192.168.1.10
cp-2 ansible_host=192.168.1.11
cp-3 ansible_host=192.168.1.12

[workers]
worker-1 ansible_host=192.168.1.13

[nodes:children]
control_plane
workers

[all:vars]
ansible_connection=local
ansible_python_interpreter=/usr/bin/python3
EOF
render() {
  local role=$1 file=$2
  ansible -i "$WORK/ha/inventory.ini" control_plane --playbook-dir "$ANSIBLE_DIR" \
    -e ansible_architecture=aarch64 -e "@roles/$role/defaults/main.yml" -m ansible.builtin.template \
    -a "src=roles/$role/templates/$file.j2 dest=$WORK/ha/{{ inventory_hostname }}-$file mode=0644" \
    >>"$LOGS/ha-render.log" 2>&1 || { tail -n 20 "$LOGS/ha-render.log" >&2; die "rendering $file failed"; }
}
env_value() { env -i bash -c 'set -a; . "$1"; printf "%s" "${!2}"' _ "$1" "$2"; }
render etcd etcd.env
render control_plane kube-apiserver.env
ha_members=cp-1=https://192.168.1.10:2380,cp-2=https://192.168.1.11:2380,cp-3=https://192.168.1.12:2380
ha_servers=https://192.168.1.10:2379,https://192.168.1.11:2379,https://192.168.1.12:2379
pki=/etc/kubernetes/pki
for i in 1 2 3; do
  ip=192.168.1.1$((i - 1))
  etcd_args=" $(env_value "$WORK/ha/cp-$i-etcd.env" PIKUBE_ETCD_FLAGS) "
  apiserver_args=" $(env_value "$WORK/ha/cp-$i-kube-apiserver.env" KUBE_APISERVER_ARGS) "
  for want in "--name=cp-$i" "--initial-cluster=$ha_members" "--listen-peer-urls=https://$ip:2380" \
    "--listen-client-urls=https://127.0.0.1:2379,https://$ip:2379" "--advertise-client-urls=https://$ip:2379" \
    "--cert-file=$pki/etcd/server.crt" "--key-file=$pki/etcd/server.key" \
    "--trusted-ca-file=$pki/etcd/ca.crt" "--client-cert-auth=true" \
    "--peer-cert-file=$pki/etcd/peer.crt" "--peer-key-file=$pki/etcd/peer.key" \
    "--peer-trusted-ca-file=$pki/etcd/ca.crt" "--peer-client-cert-auth=true"; do
    [[ $etcd_args == *" $want "* ]] || die "HA: cp-$i's etcd.env lacks $want: $etcd_args"
  done
  for want in "--etcd-servers=$ha_servers" "--advertise-address=$ip" "--etcd-cafile=$pki/etcd/ca.crt" \
    "--etcd-certfile=$pki/apiserver-etcd-client.crt" "--etcd-keyfile=$pki/apiserver-etcd-client.key"; do
    [[ $apiserver_args == *" $want "* ]] || die "HA: cp-$i's kube-apiserver.env lacks $want: $apiserver_args"
  done
done
echo "test-ansible: HA variant: 3 etcd members with client and peer TLS, each apiserver lists all three over TLS"

# The node: a network namespace with loopback and an interface holding its address (the
# default route points at it, so facts and the kubelet see a host address). A veth pair
# with both ends inside: this kernel has no dummy interfaces.
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add pikube0 type veth peer name pikube1
ip -n "$NS" addr add "$NODE_IP/24" dev pikube0
ip -n "$NS" link set pikube1 up
ip -n "$NS" link set pikube0 up
ip -n "$NS" route add default dev pikube0

cat >"$WORK/inventory.ini" <<EOF
[control_plane]
$NODE ansible_connection=local ansible_host=$NODE_IP ansible_python_interpreter=/usr/bin/python3

[workers]

[nodes:children]
control_plane
workers
EOF
# Everything that would clash with another containerd, etcd or kubelet on this machine
# moves into the scratch folder.
cat >"$WORK/vars.yml" <<EOF
pikube_bin_dir: $WORK/bin
pikube_pki_local_dir: $WORK/controller
pikube_manage_services: false
pikube_offline: true
common_reboot_for_cmdline: false
etcd_data_dir: $WORK/etcd
containerd_config_file: $CTRD/config.toml
containerd_root: $CTRD/root
containerd_state: $CTRD/state
containerd_socket: $SOCK
containerd_ttrpc_socket: $CTRD/ttrpc.sock
containerd_opt_dir: $CTRD/opt
containerd_runc_root: $CTRD/runc
cni_conf_dir: $WORK/cni/net.d
node_kubelet_root_dir: $WORK/kubelet
EOF

run_playbook() {
  local n=$1
  log "ansible-playbook site.yml, run $n (log: $LOGS/playbook-$n.log)"
  if ! in_ns ansible-playbook -i "$WORK/inventory.ini" -e "@$WORK/vars.yml" site.yml \
    >"$LOGS/playbook-$n.log" 2>&1; then
    tail -n 40 "$LOGS/playbook-$n.log" >&2
    die "run $n of the playbook failed"
  fi
  recap=$(grep -E "^$NODE +: " "$LOGS/playbook-$n.log" | tail -n1)
  [ -n "$recap" ] || die "run $n: no PLAY RECAP for $NODE"
  echo "test-ansible: run $n: $recap"
}
run_playbook 1
grep -qE '(^|\s)changed=0\s' <<<"$recap" && die "run 1 changed nothing: it installed nothing?"
run_playbook 2
if ! grep -qE '(^|\s)changed=0\s' <<<"$recap"; then
  grep -E '^(changed|TASK)' "$LOGS/playbook-2.log" | grep -B1 '^changed' >&2
  die "the second run changed something: the playbook is not idempotent"
fi
grep -qE '(^|\s)failed=0\s' <<<"$recap" || die "run 2 failed"

# systemd's part: each unit's ExecStart with its env file's variables.
start_unit() {
  local unit=$1 file=/etc/systemd/system/$1.service exec_start
  exec_start=$(sed -n 's/^ExecStart=//p' "$file")
  [ -n "$exec_start" ] || die "$file has no ExecStart"
  log "starting $unit: $exec_start (with /etc/pikube/$unit.env)"
  # nsenter, env and bash each exec the next: $! is the daemon's pid.
  nsenter --net="/run/netns/$NS" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c 'set -a; if [ -f "$1" ]; then . "$1"; fi; set +a; set -f; eval "exec $2"' \
    _ "/etc/pikube/$unit.env" "$exec_start" >"$LOGS/$unit.log" 2>&1 &
  started+=("$unit:$!")
}
must() {
  local what=$1 timeout=$2 logfile=$3; shift 3
  wait_for "$timeout" "$@" || {
    tail -n 30 "$logfile" >&2
    die "$what"
  }
}

start_unit etcd
etcd_pki=/etc/kubernetes/pki/etcd
etcd_health() {
  in_ns curl -fsS --max-time 5 --cacert "$etcd_pki/ca.crt" --cert "$etcd_pki/healthcheck-client.crt" \
    --key "$etcd_pki/healthcheck-client.key" "$@" https://127.0.0.1:2379/health
}
must "etcd did not become healthy over TLS" 30 "$LOGS/etcd.log" etcd_health
# kubeadm's setup: TLS only, and only clients with a certificate of the etcd CA.
if in_ns curl -fsS --max-time 5 http://127.0.0.1:2379/health >/dev/null 2>&1; then
  die "etcd answers plain http on its client port"
fi
if in_ns curl -fsS --max-time 5 --cacert "$etcd_pki/ca.crt" https://127.0.0.1:2379/health >/dev/null 2>&1; then
  die "etcd answers a client without a certificate"
fi
if in_ns curl -fsS --max-time 5 --cacert "$etcd_pki/ca.crt" --cert /etc/kubernetes/pki/apiserver-kubelet-client.crt \
  --key /etc/kubernetes/pki/apiserver-kubelet-client.key https://127.0.0.1:2379/health >/dev/null 2>&1; then
  die "etcd answers a client whose certificate the cluster CA, not the etcd CA, signed"
fi
echo "test-ansible: etcd serves TLS only and requires a client certificate of the etcd CA"
start_unit kube-apiserver
must "kube-apiserver did not become ready" 60 "$LOGS/kube-apiserver.log" kubectl_admin get --raw /readyz
# The playbook creates the kube-dns Service only when it started the apiserver itself.
kubectl_admin create -f - >/dev/null <<'EOF'
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
 "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"},
          "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}
EOF
start_unit kube-scheduler
must "kube-scheduler did not become ready" 60 "$LOGS/kube-scheduler.log" in_ns curl -fsSk https://127.0.0.1:10259/readyz
start_unit kube-controller-manager
must "kube-controller-manager did not become ready" 60 "$LOGS/kube-controller-manager.log" \
  in_ns curl -fsSk https://127.0.0.1:10257/readyz

# The Debian unit runs containerd with /etc/containerd/config.toml; here the playbook
# wrote the configuration to the scratch folder.
log "starting containerd --config $CTRD/config.toml"
nsenter --net="/run/netns/$NS" containerd --config "$CTRD/config.toml" >"$LOGS/containerd.log" 2>&1 &
started+=("containerd:$!")
must "containerd did not start" 30 "$LOGS/containerd.log" ctr -a "$SOCK" version
log "importing the local images (busybox:1.35, pause:3.10)"
"$PIKUBE_ROOT/hack/images.sh" --address "$SOCK" >"$LOGS/images.log" 2>&1 ||
  die "building or importing the images failed; see $LOGS/images.log"

start_unit kubelet
must "the kubelet did not become healthy" 60 "$LOGS/kubelet.log" in_ns curl -fsS http://127.0.0.1:10248/healthz
start_unit kube-proxy
must "kube-proxy did not become healthy" 60 "$LOGS/kube-proxy.log" in_ns curl -fsS http://127.0.0.1:10256/healthz

node_ready() {
  [ "$(kubectl_admin get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
must "node $NODE did not become Ready" 120 "$LOGS/kubelet.log" node_ready
kubectl_admin get nodes -o wide

kubectl_admin run ansible-check --image=docker.io/library/busybox:1.35 --image-pull-policy=Never \
  --restart=Never -- sleep 3600 >/dev/null
pod_running() { [ "$(kubectl_admin get pod ansible-check -o 'jsonpath={.status.phase}')" = Running ]; }
must "pod ansible-check did not start on $NODE" 120 "$LOGS/kubelet.log" pod_running
kubectl_admin get pod ansible-check -o wide
passed=1
echo "test-ansible: ok (lint clean, second run changed=0, node $NODE Ready, a pod Running)"
