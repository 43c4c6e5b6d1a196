#!/usr/bin/env bash
# Installs what building and testing ferricorn needs on Debian 12:
# the system Python's headers and venv module (ferricorn links libpython3.X),
# then the test virtualenv (Flask, Django) under target/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
need=()
for pkg in python3-dev python3-venv; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]} ..." >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
"$root/scripts/test-venv.sh"
echo "install-deps: done" >&2
