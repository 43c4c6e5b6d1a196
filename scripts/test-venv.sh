#!/usr/bin/env bash
# Creates target/test-venv from the system Python (the one ferricorn links),
# with the frameworks the tests run, gunicorn (the reference the HTTP and
# statsd tests compare with) and prometheus_client (whose parser reads
# /metrics), and unpacks gunicorn's source distribution under target/ for
# its request vectors (tests/requests). Safe to call
# concurrently and repeatedly; a venv made for an older list of packages is
# brought up to date.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/test-venv"
stamp="$venv/.ferricorn-ready"
gunicorn_version=27.0.1
packages=("flask>=3,<4" "django>=4.2,<6" "gevent>=24,<26" "fastapi>=0.110,<1" "uvloop>=0.19,<1" "prometheus_client>=0.17,<1" "httpx[http2]>=0.27,<1" "gunicorn==$gunicorn_version")
vectors="$root/target/gunicorn-$gunicorn_version"
mkdir -p "$root/target"
exec 9>"$root/target/test-venv.lock"
flock 9
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && [ -d "$vectors/tests/requests" ] && exit 0
if [ ! -x "$venv/bin/python" ]; then
    echo "test-venv: creating $venv ..." >&2
    /usr/bin/python3 -m venv "$venv"
fi
echo "test-venv: installing ${packages[*]} ..." >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
if [ ! -d "$vectors/tests/requests" ]; then
    echo "test-venv: fetching gunicorn $gunicorn_version's source for its request vectors ..." >&2
    sdist=$(mktemp -d)
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "gunicorn==$gunicorn_version" -d "$sdist"
    tar -xzf "$sdist/gunicorn-$gunicorn_version.tar.gz" -C "$root/target"
    rm -rf "$sdist"
    [ -d "$vectors/tests/requests/valid" ] || { echo "test-venv: no tests/requests in gunicorn's sdist" >&2; exit 1; }
fi
echo "${packages[*]}" >"$stamp"
echo "test-venv: ready" >&2
