#!/usr/bin/env bash
# Builds the test images locally and imports them into containerd's k8s.io namespace, so
# manifests naming them run offline (no pull ever leaves the machine):
#   docker.io/library/busybox:1.35   Debian's busybox-static with its applet links
#   registry.k8s.io/pause:3.10       a static /pause that sleeps until SIGTERM/SIGINT and
#                                    reaps the children it inherits as PID 1
# Build outputs are cached under $PIKUBE_IMAGES_DIR (default $PIKUBE_ROOT/target/images),
# keyed by their inputs; running it again only re-imports (containerd dedups the blobs).
#
# usage: hack/images.sh [--address <containerd socket>] [--build-only]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ADDRESS=/run/containerd/containerd.sock
BUILD_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --address|-a) [ $# -ge 2 ] || die "--address needs a value"; ADDRESS=$2; shift 2 ;;
    --address=*) ADDRESS=${1#--address=}; shift ;;
    --build-only) BUILD_ONLY=1; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (usage: hack/images.sh [--address <containerd socket>] [--build-only])" ;;
  esac
done

BUILD=${PIKUBE_IMAGES_DIR:-$PIKUBE_ROOT/target/images}
BUSYBOX=${BUSYBOX:-/bin/busybox}
for tool in umoci gcc sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install umoci gcc coreutils tar)"
done
[ "$BUILD_ONLY" -eq 1 ] || command -v ctr >/dev/null 2>&1 || die "ctr is missing (apt-get install containerd)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing (apt-get install busybox-static)"
# The image has no libc: a dynamically linked busybox would not start in it.
if command -v file >/dev/null 2>&1 && file -L "$BUSYBOX" | grep -q 'dynamically linked'; then
  die "$BUSYBOX is dynamically linked (apt-get install busybox-static)"
fi
mkdir -p "$BUILD"
# Concurrent runs (parallel tests) build one at a time.
exec 9>"$BUILD/.lock"
flock 9

# The pause program: our own, small and static.
PAUSE_C='#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void shutdown_now(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = shutdown_now;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
  for (;;) pause();
}
'

# Builds an OCI layout tarball $1 (cached) from a rootfs filled by the function $2, with
# the image config flags that follow.
build_image() {
  local out=$1 fill=$2 tag=$3; shift 3
  if [ -s "$out" ]; then
    log "cached $(basename "$out")"
    return
  fi
  local work
  work=$(mktemp -d "$BUILD/work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:$tag"
  umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null
  "$fill" "$work/bundle/rootfs"
  umoci repack --image "$work/layout:$tag" "$work/bundle"
  umoci config --image "$work/layout:$tag" "$@"
  umoci gc --layout "$work/layout"
  tar -C "$work/layout" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  log "built $(basename "$out")"
}

fill_busybox() {
  local root=$1
  mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/tmp" \
    "$root/root" "$root/home" "$root/var" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  local applet
  while read -r applet; do
    [ "$applet" = "bin/busybox" ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
  done < <("$BUSYBOX" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
}

fill_pause() {
  local root=$1
  gcc -static -Os -s -o "$root/pause" "$BUILD/pause.c"
}

# Cache keys: the inputs of each image.
printf '%s' "$PAUSE_C" > "$BUILD/pause.c.new"
if ! cmp -s "$BUILD/pause.c.new" "$BUILD/pause.c" 2>/dev/null; then
  mv "$BUILD/pause.c.new" "$BUILD/pause.c"
else
  rm -f "$BUILD/pause.c.new"
fi
script_sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
busybox_key=$( (sha256sum "$BUSYBOX"; echo "$script_sum"; uname -m) | sha256sum | cut -c1-16)
pause_key=$( (sha256sum "$BUILD/pause.c"; echo "$script_sum"; uname -m) | sha256sum | cut -c1-16)

BUSYBOX_TAR=$BUILD/busybox-1.35-$busybox_key.tar
PAUSE_TAR=$BUILD/pause-3.10-$pause_key.tar
build_image "$BUSYBOX_TAR" fill_busybox 1.35 \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd sh
build_image "$PAUSE_TAR" fill_pause 3.10 \
  --config.entrypoint /pause --config.user 65535:65535

[ "$BUILD_ONLY" -eq 1 ] && exit 0
ctr -a "$ADDRESS" -n k8s.io images import --base-name docker.io/library/busybox "$BUSYBOX_TAR" >/dev/null
ctr -a "$ADDRESS" -n k8s.io images import --base-name registry.k8s.io/pause "$PAUSE_TAR" >/dev/null
log "imported docker.io/library/busybox:1.35 and registry.k8s.io/pause:3.10 into $ADDRESS (k8s.io)"
