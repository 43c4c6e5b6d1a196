//! Link CPython statically when the distribution ships the archive that its
//! own `/usr/bin/python3` is built from (Debian: `libpython3.X.a` in
//! `LIBPL`), else the shared libpython that pyo3 links by default (RHEL ships
//! no archive).
//!
//! Why: the shared library is compiled as position-independent code without
//! the optimisations of the interpreter binary, and every call between its
//! own functions goes through the PLT. Measured here: the same pure-Python
//! loop takes about 10 % longer in the shared library, and a Flask hello
//! world served about a third more requests per second with the archive
//! (docs/benchmarks.md). Set `FERRICORN_SHARED_LIBPYTHON=1` to link the
//! shared library anyway.

use std::path::Path;
use std::process::Command;

const QUERY: &str = "import sysconfig as s
print(s.get_config_var('LIBPL') or '')
print(s.get_config_var('LIBRARY') or '')
print(' '.join(s.get_config_var(k) or '' for k in ('LIBS', 'SYSLIBS', 'MODLIBS')))";

/// The modules the interpreter has built in, and those it loads from its
/// lib-dynload: a virtualenv's Python built with more modules built in (as
/// Debian's is) lacks the files for them (see `python::check_virtualenv`).
const MODULES: &str = "import os, sys, sysconfig
print(','.join(sys.builtin_module_names))
d = os.path.join(sysconfig.get_path('platstdlib'), 'lib-dynload')
print(','.join(sorted({f.split('.')[0] for f in os.listdir(d)})) if os.path.isdir(d) else '')";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=FERRICORN_SHARED_LIBPYTHON");
    println!("cargo:rerun-if-env-changed=FERRICORN_STATIC_DEPS");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let modules = Command::new(&python)
        .args(["-c", MODULES])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut lines = modules.lines();
    let builtin = lines.next().unwrap_or("");
    let dynload = lines.next().unwrap_or("");
    println!("cargo:rustc-env=FERRICORN_PYTHON_BUILTIN_MODULES={builtin}");
    println!("cargo:rustc-env=FERRICORN_PYTHON_DYNLOAD_MODULES={dynload}");
    if std::env::var_os("FERRICORN_SHARED_LIBPYTHON").is_some() {
        return;
    }
    let Ok(out) = Command::new(&python).args(["-c", QUERY]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(dir), Some(library), Some(libs)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let archive = Path::new(dir).join(library);
    if !out.status.success() || !library.ends_with(".a") || !archive.is_file() {
        return;
    }
    println!("cargo:rerun-if-changed={}", archive.display());
    // Linked ahead of pyo3's `-lpythonX.Y`, the archive defines every
    // symbol first, so `--as-needed` drops the shared library. The whole
    // archive: extension modules need functions this program never calls.
    let name = library
        .trim_start_matches("lib")
        .trim_end_matches(".a")
        .to_owned();
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static:+whole-archive={name}");
    // The archive is not position-independent code.
    println!("cargo:rustc-link-arg=-no-pie");
    // C extension modules look the interpreter's symbols up in the program.
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic");
    // A wheel (FERRICORN_STATIC_DEPS, set by scripts/build-wheels.sh) links
    // the interpreter's own dependencies (zlib, expat) from their archives
    // too: the machine that installs it may lack them, and the loader's
    // error would come before ferricorn could say what to install.
    let static_deps = std::env::var_os("FERRICORN_STATIC_DEPS").is_some();
    let mut seen = Vec::new();
    for lib in libs.split_whitespace() {
        if seen.contains(&lib) {
            continue;
        }
        seen.push(lib);
        match lib
            .strip_prefix("-l")
            .and_then(|n| static_archive(n, static_deps))
        {
            Some(archive) => println!("cargo:rustc-link-arg={}", archive.display()),
            None => println!("cargo:rustc-link-arg={lib}"),
        }
    }
}

/// The static archive of library `name`, when wanted and installed; the C
/// library's own parts stay shared (glibc is the wheel's platform).
fn static_archive(name: &str, wanted: bool) -> Option<std::path::PathBuf> {
    const GLIBC: [&str; 6] = ["c", "m", "dl", "pthread", "rt", "util"];
    if !wanted || GLIBC.contains(&name) {
        return None;
    }
    let out = Command::new("cc")
        .arg(format!("-print-file-name=lib{name}.a"))
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (path.is_absolute() && path.is_file()).then_some(path)
}
