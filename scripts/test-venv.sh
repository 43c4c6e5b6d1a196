#!/usr/bin/env bash
# Creates target/test-venv from the system Python (the one ferricorn links),
# with the frameworks the tests run. Safe to call concurrently and repeatedly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/test-venv"
stamp="$venv/.ferricorn-ready"
mkdir -p "$root/target"
exec 9>"$root/target/test-venv.lock"
flock 9
[ -f "$stamp" ] && exit 0
echo "test-venv: creating $venv (Flask, Django) ..." >&2
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "flask>=3,<4" "django>=4.2,<6"
touch "$stamp"
echo "test-venv: ready" >&2
