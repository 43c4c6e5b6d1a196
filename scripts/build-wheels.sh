#!/usr/bin/env bash
# Builds ferricorn's wheels: one per CPython 3.X, each with that
# interpreter's core linked in and its standard library beside it (see
# docs/python-versions.md), with maturin.
#
#   scripts/build-wheels.sh [--profile release|dev] [--out DIR] [PYTHON ...]
#   scripts/build-wheels.sh --list     the interpreters it would build for
#
# PYTHON: interpreters to build for (paths or names on PATH); each needs
# its static archive (libpython3.X.a). By default every CPython 3.9-3.13 on
# this machine: the distribution's /usr/bin/python3.X where it has its
# archive, else pyenv's newest 3.X.
# A wheel serves virtualenvs of any CPython of its minor version (Debian's,
# python.org's, pyenv's, uv's); ferricorn refuses others at start, saying
# what to run.
# Wheels land in DIR (default target/wheels). maturin itself is installed
# from PyPI into target/wheel-tools the first time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
out="$root/target/wheels"
pythons=()
list=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-wheels: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) pythons+=("$1"); shift ;;
  esac
done
if [ ${#pythons[@]} -eq 0 ]; then
  pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  has_archive='import os, sysconfig as s, sys
sys.exit(not os.path.isfile(os.path.join(s.get_config_var("LIBPL"), s.get_config_var("LIBRARY"))))'
  for minor in 9 10 11 12 13; do
    # The distribution's build where it ships its archive (Debian's is
    # the one the deb links), else python.org's layout (pyenv builds it)
    # at the newest patch release.
    system=/usr/bin/python3.$minor
    if [ -x "$system" ] && "$system" -c "$has_archive" 2>/dev/null; then
      pythons+=("$system")
      continue
    fi
    found=$(ls -d "$pyenv_root"/versions/3."$minor".* 2>/dev/null | grep -E '/3\.[0-9]+\.[0-9]+$' | sort -V | tail -1 || true)
    if [ -n "$found" ] && "$found/bin/python3" -c "$has_archive" 2>/dev/null; then
      pythons+=("$found/bin/python3")
    fi
  done
  [ ${#pythons[@]} -eq 0 ] && pythons=(/usr/bin/python3)
fi
if [ -n "$list" ]; then printf '%s\n' "${pythons[@]}"; exit 0; fi
tools="$root/target/wheel-tools"
mkdir -p "$root/target"
(
  # Several builds may start at once (the tests): one installs maturin.
  flock 9
  if [ ! -x "$tools/bin/maturin" ]; then
    echo "build-wheels: installing maturin into $tools ..." >&2
    rm -rf "$tools"
    /usr/bin/python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.7,<2'
  fi
) 9>"$root/target/wheel-tools.lock"
mkdir -p "$out"
for python in "${pythons[@]}"; do
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "build-wheels: CPython $version ($python), profile $profile ..." >&2
  # One target directory for every version: only pyo3 and ferricorn are
  # built again when the interpreter changes.
  # FERRICORN_STATIC_DEPS: zlib and expat from their archives (build.rs).
  staging=$(mktemp -d "$root/target/wheel-staging.XXXXXX")
  (cd "$root" && FERRICORN_STATIC_DEPS=1 "$tools/bin/maturin" build --quiet --profile "$profile" \
      --interpreter "$python" --out "$staging" --target-dir "$root/target/wheel-build")
  built=$(ls "$staging"/ferricorn-*.whl)
  "$python" "$root/scripts/wheel-stdlib.py" "$built"
  mv "$built" "$out/"
  rm -rf "$staging"
done
ls -1 "$out"/ferricorn-*.whl
