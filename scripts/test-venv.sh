#!/usr/bin/env bash
# Creates target/test-venv from the system Python (the one ferricorn links),
# with the frameworks the tests run. Safe to call concurrently and repeatedly;
# a venv made for an older list of packages is brought up to date.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/test-venv"
stamp="$venv/.ferricorn-ready"
packages=("flask>=3,<4" "django>=4.2,<6" "gevent>=24,<26" "fastapi>=0.110,<1" "uvloop>=0.19,<1")
mkdir -p "$root/target"
exec 9>"$root/target/test-venv.lock"
flock 9
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && exit 0
if [ ! -x "$venv/bin/python" ]; then
    echo "test-venv: creating $venv ..." >&2
    /usr/bin/python3 -m venv "$venv"
fi
echo "test-venv: installing ${packages[*]} ..." >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
echo "${packages[*]}" >"$stamp"
echo "test-venv: ready" >&2
