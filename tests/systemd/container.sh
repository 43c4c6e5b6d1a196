#!/usr/bin/env bash
# A real systemd 252 in systemd-nspawn, for ferricorn's tests.
# (See shared notes: never boot systemd over the host's own root.)
#
#   container.sh rootfs          build the cached rootfs under target/ (once, ~60 s)
#   container.sh boot NAME DIR   boot a volatile container; DIR is bind-mounted
#                                read-only at /opt/ferricorn; prints the leader PID
#   container.sh stop NAME       power it off and clean up
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rootfs="$root/target/systemd-rootfs"
state="$root/target/systemd-containers"

log() { echo "container: $*" >&2; }

build_rootfs() {
  exec 9>"$root/target/systemd-rootfs.lock"
  flock 9
  # python3-venv: the wheel test installs ferricorn with pip in here.
  local packages=systemd,systemd-sysv,dbus,procps,curl,python3,python3-venv,libpython3.11,ca-certificates,man-db,groff-base
  # A rootfs made for another package list is made again.
  if [ "$(cat "$rootfs/.ferricorn-ready" 2>/dev/null)" = "$packages" ]; then return 0; fi
  local mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "building a Debian bookworm rootfs with systemd in $rootfs (about a minute) ..."
  rm -rf "$rootfs" "$rootfs.tmp"
  debootstrap --variant=minbase \
    --include="$packages" \
    bookworm "$rootfs.tmp" "$mirror" >"$root/target/debootstrap.log" 2>&1 \
    || { tail -20 "$root/target/debootstrap.log" >&2; exit 1; }
  echo ferricorn-test >"$rootfs.tmp/etc/hostname"
  systemd-id128 new >"$rootfs.tmp/etc/machine-id"
  for unit in console-getty.service getty@.service serial-getty@.service container-getty@.service \
      apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
      e2scrub_reap.service fstrim.timer systemd-pstore.service systemd-networkd.service \
      systemd-networkd.socket systemd-resolved.service man-db.timer; do
    ln -sf /dev/null "$rootfs.tmp/etc/systemd/system/$unit"
  done
  mkdir -p "$rootfs.tmp/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\nForwardToConsole=no\nRateLimitBurst=0\n' \
    >"$rootfs.tmp/etc/systemd/journald.conf.d/ferricorn-test.conf"
  echo "$packages" >"$rootfs.tmp/.ferricorn-ready"
  mv "$rootfs.tmp" "$rootfs"
  log "rootfs ready"
}

boot() {
  local name=$1 share=$2
  build_rootfs
  mkdir -p "$state"
  for h in systemd unified; do mkdir -p "/sys/fs/cgroup/$h/$name" 2>/dev/null || true; done
  setsid sh -c "for h in systemd unified; do [ -d /sys/fs/cgroup/\$h/$name ] && echo \$\$ > /sys/fs/cgroup/\$h/$name/cgroup.procs; done;
    exec systemd-nspawn -D '$rootfs' -M '$name' -b --register=no --keep-unit --link-journal=no \
      --console=read-only --volatile=overlay --bind-ro='$share:/opt/ferricorn'" \
    </dev/null >"$state/$name.console.log" 2>&1 &
  local nspawn=$!
  echo "$nspawn" >"$state/$name.nspawn.pid"
  local leader="" i
  for i in $(seq 1 200); do
    leader=$(cat "/proc/$nspawn/task/$nspawn/children" 2>/dev/null | awk '{print $1}')
    if [ -n "$leader" ] && [ -e "/proc/$leader/root/run/systemd/private" ]; then break; fi
    sleep 0.05
  done
  [ -n "$leader" ] || { cat "$state/$name.console.log" >&2; exit 1; }
  echo "$leader" >"$state/$name.leader.pid"
  timeout 60 nsenter -t "$leader" -a systemctl is-system-running --wait >/dev/null 2>&1 || true
  echo "$leader"
}

stop() {
  local name=$1 nspawn leader
  nspawn=$(cat "$state/$name.nspawn.pid" 2>/dev/null || true)
  leader=$(cat "$state/$name.leader.pid" 2>/dev/null || true)
  if [ -n "$leader" ] && [ -e "/proc/$leader" ]; then
    nsenter -t "$leader" -a systemctl --no-block poweroff >/dev/null 2>&1 || true
  fi
  if [ -n "$nspawn" ]; then
    for _ in $(seq 1 100); do [ -e "/proc/$nspawn" ] || break; sleep 0.05; done
    if [ -e "/proc/$nspawn" ] && [ -n "$leader" ]; then kill -s RTMIN+4 "$leader" 2>/dev/null || true; sleep 1; fi
    if [ -e "/proc/$nspawn" ]; then kill -KILL "$nspawn" 2>/dev/null || true; sleep 0.2; fi
  fi
  for h in systemd unified; do
    [ -d "/sys/fs/cgroup/$h/$name" ] && find "/sys/fs/cgroup/$h/$name" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -f "$state/$name.nspawn.pid" "$state/$name.leader.pid"
}

case "${1:-}" in
  rootfs) build_rootfs ;;
  boot) boot "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 rootfs | boot NAME DIR | stop NAME" >&2; exit 2 ;;
esac
