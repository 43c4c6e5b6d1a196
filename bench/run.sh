#!/usr/bin/env bash
# Side-by-side benchmarks: ferricorn vs gunicorn vs granian (and a bare hyper
# ceiling), same apps, same worker count, loaded by wrk over loopback.
#
#   bench/run.sh            full run (7 rounds of 2 s per server and scenario), writes target/benchmarks-results.md
#   bench/run.sh --smoke    1 s each, prints the tables only
#
# Installs what it needs: wrk, h2load and openssl (Debian), a virtualenv with
# gunicorn, granian, gevent, Flask and h2 (target/bench-venv), release builds of ferricorn, the
# hyper ceiling and bench/loadgen (the load shapes wrk cannot make: a unix
# socket, idle connections held, slow clients).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]} ..." >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

venv="$root/target/bench-venv"
packages="gunicorn granian gevent flask packaging uvicorn uvloop fastapi h2"
if [ ! -f "$venv/.ready" ] || [ "$(cat "$venv/.ready")" != "$packages" ]; then
  echo "bench: preparing $venv ($packages) ..." >&2
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $packages
  echo "$packages" >"$venv/.ready"
fi

echo "bench: building ferricorn and the hyper ceiling (release) ..." >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path bench/hyper-hello/Cargo.toml --target-dir target/hyper-hello
cargo build --release --quiet --manifest-path bench/loadgen/Cargo.toml --target-dir target/loadgen

# CARGO_TARGET_DIR, when set, is where cargo put ferricorn (the test suite
# builds it beside its own target directory).
exec /usr/bin/python3 "$root/bench/bench.py" --venv "$venv" \
  --ferricorn "${CARGO_TARGET_DIR:-$root/target}/release/ferricorn" "$@"
