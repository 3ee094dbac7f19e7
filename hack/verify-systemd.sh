#!/usr/bin/env bash
# Checks the units in systemd/ with `systemd-analyze verify`, in a scratch root holding
# the system's own units and the daemons built in target/debug (PIKUBE_BIN_DIR to use
# others, e.g. target/release) at /usr/local/bin (the verifier insists every ExecStart
# binary exists). Any warning fails. Then checks the example env files in systemd/env/:
# each sets the variable its unit's ExecStart expands, and every --flag in it is one the
# daemon's --help lists (etcd's: /usr/bin/etcd's, the binary its unit runs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$PIKUBE_ROOT"
bin_dir="${PIKUBE_BIN_DIR:-${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/debug}"
root=$(mktemp -d /tmp/pikube-units.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp /usr/bin/etcd "$root/usr/bin/etcd"
units=()
for unit in systemd/*.service; do
	name=$(basename "$unit")
	bin=${name%.service}
	if [ "$bin" != etcd ]; then
		if [ ! -x "$bin_dir/$bin" ]; then
			echo "verify-systemd: $bin_dir/$bin is missing: build the workspace first" >&2
			exit 1
		fi
		cp "$bin_dir/$bin" "$root/usr/local/bin/$bin"
	fi
	cp "$unit" "$root/etc/systemd/system/"
	units+=("$name")
done
out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || true
if [ -n "$out" ]; then
	echo "$out" >&2
	echo "verify-systemd: systemd-analyze found problems in systemd/" >&2
	exit 1
fi
echo "verify-systemd: ${units[*]} ok"

bad=0
envs=()
for env in systemd/env/*.env; do
	daemon=$(basename "$env" .env)
	unit=systemd/$daemon.service
	if [ ! -f "$unit" ]; then
		echo "verify-systemd: $env names no unit ($unit is missing)" >&2
		bad=1
		continue
	fi
	var=$(sed -n 's|^ExecStart=[^ ]* .*\$\([A-Z_]*\).*|\1|p' "$unit")
	# A clean shell reads the file as systemd does (double-quoted values, backslash
	# continuation lines, # comments).
	args=$(env -i bash -c 'set -a; . "$1"; printf "%s" "${!2-}"' _ "$env" "$var")
	if [ -z "$args" ]; then
		echo "verify-systemd: $env does not set $var, which $unit's ExecStart expands" >&2
		bad=1
		continue
	fi
	daemon_bin=$bin_dir/$daemon
	[ "$daemon" != etcd ] || daemon_bin=/usr/bin/etcd
	help=$("$daemon_bin" --help 2>&1) || true
	for word in $args; do
		case "$word" in --*) ;; *) continue ;; esac
		flag=${word%%=*}
		if ! grep -qE -- "(^|[ ,])$flag([ =,[]|\$)" <<<"$help"; then
			echo "verify-systemd: $env: $daemon --help does not list $flag" >&2
			bad=1
		fi
	done
	envs+=("$(basename "$env")")
done
[ "$bad" = 0 ] || exit 1
echo "verify-systemd: systemd/env: ${envs[*]} ok"
