#!/usr/bin/env bash
# Installs what building and testing ferricorn needs on Debian 12:
# the system Python's headers and venv module (ferricorn links libpython3.X, statically from python3-dev's archive),
# debootstrap and systemd-container, man-db, dpkg-dev and rpm, wrk (the bench smoke test), then cargo-deb
# and cargo-generate-rpm, the test virtualenv (Flask, Django) and the cached
# container rootfs, both under target/.
#
#   scripts/install-deps.sh --build   only what building ferricorn needs
#                                     (python3-dev: the archive it links)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
packages=(python3-dev python3-venv debootstrap systemd-container man-db groff-base dpkg-dev rpm wrk openssl curl nghttp2-client)
build_only=
if [ "${1:-}" = --build ]; then
  build_only=1
  packages=(python3-dev)
fi
# debootstrap and systemd-nspawn boot a real systemd for the systemd tests;
# systemd-container is pinned to the host's systemd so apt never upgrades it.
systemd_version=$(dpkg-query -W -f='${Version}' systemd)
need=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
for i in "${!need[@]}"; do
  [ "${need[$i]}" = systemd-container ] && need[$i]="systemd-container=$systemd_version"
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]} ..." >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -n "$build_only" ]; then
  echo "install-deps: ready to build" >&2
  exit 0
fi
# The package builders the packaging tests use.
for tool in cargo-deb cargo-generate-rpm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-deps: cargo install $tool (a few minutes) ..." >&2
    cargo install --locked --quiet "$tool"
  fi
done
"$root/scripts/test-venv.sh"
"$root/tests/systemd/container.sh" rootfs
echo "install-deps: done" >&2
