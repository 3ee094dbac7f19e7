#!/usr/bin/env bash
# Checks the units in systemd/ with `systemd-analyze verify`, in a scratch root holding
# the system's own units and the daemons built in target/debug at /usr/local/bin (the
# verifier insists every ExecStart binary exists). Any warning fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$PIKUBE_ROOT"
bin_dir="${CARGO_TARGET_DIR:-$PIKUBE_ROOT/target}/debug"
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
