"""Adds the standard library of the interpreter that runs this script to a
ferricorn wheel that maturin built against that interpreter.

    python3.X scripts/wheel-stdlib.py WHEEL

The wheel's `ferricorn` has this CPython's core linked in; with its own
standard library beside it (`<prefix>/lib/ferricorn-python/lib/python3.X`,
installed from the wheel's `.data/data/`), core and library always match,
whatever Python made the virtualenv: ferricorn takes only the venv's
site-packages (docs/python-versions.md says why).

What a server never imports is left out (the test suites, IDLE, tkinter,
curses, readline, dbm). The modules are compiled here with unchecked-hash
.pyc files, which stay valid whatever mtime pip gives the sources, so a
worker never compiles the standard library at start.

`needed-libraries` lists, for each compiled module, the shared libraries
beyond the C library it loads (resolved here by `ldd`): ferricorn checks
them at start and says what to install instead of failing at an import.
"""

import base64
import hashlib
import io
import os
import py_compile
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

SKIP_TOP = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "site-packages", "dist-packages", "__pycache__", "pydoc_data",
}
SKIP_NESTED = {"test", "tests", "idle_test", "__pycache__"}
SKIP_MODULES = ("_tkinter", "readline", "_curses", "_curses_panel", "nis", "_gdbm", "_dbm")
SKIP_PREFIXES = ("_test", "_xx", "xx", "_ctypes_test")
GLIBC = (
    "linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so",
    "librt.so", "libutil.so", "libresolv.so",
)


def kept_module(name):
    base = name.split(".")[0]
    return base not in SKIP_MODULES and not base.startswith(SKIP_PREFIXES)


def stdlib_files(stdlib):
    """(path on disk, path under lib/python3.X) of every file we ship."""
    for top, dirs, files in os.walk(stdlib):
        rel = os.path.relpath(top, stdlib)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in SKIP_TOP and not d.startswith("config-")]
        else:
            dirs[:] = [d for d in dirs if d not in SKIP_NESTED]
        dirs.sort()
        for f in sorted(files):
            if rel == "lib-dynload" and not kept_module(f):
                continue
            if f.endswith((".pyc", ".pyo", ".exe")):
                continue
            yield os.path.join(top, f), os.path.normpath(os.path.join(rel, f))


def needed_libraries(modules):
    """module name -> the non-C-library sonames it loads, transitively."""
    needed = {}
    for path in modules:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
        libs = [line.split()[0] for line in out.splitlines() if "=>" in line]
        libs = [lib for lib in libs if not lib.startswith(GLIBC) and "/" not in lib]
        missing = [line for line in out.splitlines() if "not found" in line]
        if missing:
            sys.exit(f"wheel-stdlib: {path} needs what this machine lacks: {missing}")
        if libs:
            needed[os.path.basename(path).split(".")[0]] = libs
    return needed


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main():
    wheel = sys.argv[1]
    mm = "%d.%d" % sys.version_info[:2]
    stdlib = sysconfig.get_path("stdlib")
    if not os.path.isfile(os.path.join(stdlib, "os.py")):
        sys.exit(f"wheel-stdlib: no standard library at {stdlib}")
    with zipfile.ZipFile(wheel) as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    dist_info = next(i.filename.split("/")[0] for i, _ in entries
                     if i.filename.split("/")[0].endswith(".dist-info"))
    home = dist_info[: -len(".dist-info")] + ".data/data/lib/ferricorn-python"
    lib = f"{home}/lib/python{mm}"

    added = []  # (name in the wheel, bytes, mode)
    dynload = []
    with tempfile.TemporaryDirectory() as tmp:
        for src, rel in stdlib_files(stdlib):
            with open(src, "rb") as f:
                data = f.read()
            is_so = src.endswith(".so")
            added.append((f"{lib}/{rel}", data, 0o755 if is_so else 0o644))
            if is_so:
                dynload.append(src)
            if src.endswith(".py"):
                pyc = os.path.join(tmp, "x.pyc")
                try:
                    py_compile.compile(src, cfile=pyc, dfile=src, doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                except py_compile.PyCompileError:
                    continue  # e.g. a file of another Python's syntax; imported from source if ever
                d, f = os.path.split(rel)
                cache = os.path.join(d, "__pycache__", f[:-3] + f".{sys.implementation.cache_tag}.pyc")
                with open(pyc, "rb") as f:
                    added.append((f"{lib}/{os.path.normpath(cache)}", f.read(), 0o644))
    manifest = "".join(f"{m} {' '.join(libs)}\n" for m, libs in sorted(needed_libraries(dynload).items()))
    added.append((f"{home}/needed-libraries", manifest.encode(), 0o644))

    record_name = f"{dist_info}/RECORD"
    data_of = {info.filename: data for info, data in entries}
    record = [line for line in data_of[record_name].decode().splitlines()
              if line and not line.startswith(record_name + ",")]
    tmp_wheel = wheel + ".part"
    with zipfile.ZipFile(tmp_wheel, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename != record_name:
                out.writestr(info, data)
        for name, data, mode in added:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
            record.append(record_line(name, data))
        record.append(f"{record_name},,")
        out.writestr(record_name, "\n".join(record) + "\n")
    os.replace(tmp_wheel, wheel)
    size = os.path.getsize(wheel) / 1e6
    print(f"wheel-stdlib: added Python {mm}'s standard library ({len(added)} files) "
          f"to {os.path.basename(wheel)} ({size:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
