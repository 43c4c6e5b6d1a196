//! Which Python a virtualenv needs, and where the embedded interpreter's
//! standard library comes from: the venv's base installation (the deb, the
//! rpm, `cargo build`) or the library a wheel installs beside its binary.

use pyo3::ffi;
use std::ffi::CStr;
use std::path::{Path, PathBuf};

/// The libpython version we are linked against, whole (e.g. "3.11.2").
pub fn linked_full_version() -> String {
    // SAFETY: Py_GetVersion returns a static string and may be called before Py_Initialize.
    let full = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    full.split_whitespace().next().unwrap_or("").to_string()
}

/// The micro version of "3.11.7" (or "3.13.0rc1", "3.11.7.final.0"): 7.
fn patch_of(version: &str) -> u32 {
    let micro = version.split('.').nth(2).unwrap_or("0");
    let digits: String = micro.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(0)
}

/// The libpython version we are linked against (e.g. "3.11"), readable before initialisation.
pub fn linked_version() -> String {
    // SAFETY: Py_GetVersion returns a static string and may be called before Py_Initialize.
    let full = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    let ver = full.split_whitespace().next().unwrap_or("");
    let mut parts = ver.split('.');
    format!(
        "{}.{}",
        parts.next().unwrap_or("?"),
        parts.next().unwrap_or("?")
    )
}

/// A virtualenv is usable only if it was made from the Python we link
/// (the same minor version, with the GIL) and, where we use its base
/// installation's standard library, one that fits our core (see below).
/// The error says what to run.
pub fn check_virtualenv(venv: &Path) -> Result<(), String> {
    let linked = linked_version();
    let shown = venv.display();
    let cfg = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg).map_err(|e| {
        format!(
            "{shown} is not a virtualenv ({}: {e}); create one with `python{linked} -m venv {shown}`",
            cfg.display(),
        )
    })?;
    let version = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
        .map(|(_, v)| v.trim().to_string());
    let Some(v) = version else { return Ok(()) };
    let mm = v.split('.').take(2).collect::<Vec<_>>().join(".");
    if mm != linked {
        return Err(format!(
            "{shown} was made with Python {v}, but this ferricorn runs Python {linked}: \
             install ferricorn into that virtualenv (`{shown}/bin/pip install ferricorn`) and run \
             its `{shown}/bin/ferricorn`, or recreate the virtualenv with `python{linked} -m venv`"
        ));
    }
    // A free-threaded build keeps its library in lib/pythonX.Yt.
    if venv.join("lib").join(format!("python{mm}t")).is_dir() {
        return Err(format!(
            "{shown} is a free-threaded Python {mm}t, which ferricorn does not run (its \
             extension modules need the GIL build): recreate it with the standard `python{mm} -m venv`"
        ));
    }
    // With its own standard library, only the venv's site-packages are
    // used, and their compiled modules need only the minor version.
    if bundled_home().is_some() {
        return Ok(());
    }
    // The standard library's compiled modules call CPython's private
    // functions, which patch releases add: a newer one than ours fails to
    // import (`undefined symbol: _PyModule_Add` from 3.11.7 under 3.11.2).
    let ours = linked_full_version();
    if patch_of(&v) > patch_of(&ours) {
        return Err(format!(
            "{shown} is Python {v}, newer than the CPython {ours} built into this ferricorn, \
             whose standard library's compiled modules need functions {ours} lacks: install a \
             ferricorn built with Python {mm}.{} or later (`scripts/build-wheels.sh` with that \
             Python), or recreate the virtualenv with Python {ours}",
            patch_of(&v)
        ));
    }
    let missing = modules_built_into(&text, &mm);
    if !missing.is_empty() {
        let home = pyvenv_value(&text, "home").unwrap_or("its Python's directory");
        return Err(format!(
            "{shown}'s Python ({home}/python{mm}) has {} compiled into it, which this ferricorn \
             (built with a CPython that loads them from files) cannot import: run the \
             distribution's ferricorn package, or build a wheel for that Python with \
             `scripts/build-wheels.sh {home}/python{mm}` and install it",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// Standard modules some distributions compile into their interpreter
/// instead of shipping them in lib-dynload (Debian's and Ubuntu's).
const OFTEN_BUILT_IN: &[&str] = &[
    "_bisect",
    "_blake2",
    "_csv",
    "_datetime",
    "_elementtree",
    "_heapq",
    "_md5",
    "_opcode",
    "_pickle",
    "_posixsubprocess",
    "_random",
    "_sha1",
    "_sha2",
    "_sha256",
    "_sha3",
    "_sha512",
    "_socket",
    "_statistics",
    "_struct",
    "array",
    "binascii",
    "cmath",
    "fcntl",
    "grp",
    "math",
    "pyexpat",
    "select",
    "syslog",
    "unicodedata",
    "zlib",
];

/// Modules the venv's base Python has built in that our interpreter loads
/// from lib-dynload, where that Python has no file for them.
fn modules_built_into(pyvenv: &str, mm: &str) -> Vec<&'static str> {
    let ours_builtin: Vec<&str> = env!("FERRICORN_PYTHON_BUILTIN_MODULES")
        .split(',')
        .collect();
    let ours_loaded: Vec<&str> = env!("FERRICORN_PYTHON_DYNLOAD_MODULES")
        .split(',')
        .collect();
    let Some(home) = pyvenv_value(pyvenv, "home") else {
        return Vec::new();
    };
    let base = Path::new(home).parent().unwrap_or(Path::new("/"));
    let dynload = base.join(format!("lib/python{mm}/lib-dynload"));
    let Ok(files) = std::fs::read_dir(&dynload) else {
        return Vec::new();
    };
    let theirs: Vec<String> = files
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.split('.').next().map(String::from))
        .collect();
    OFTEN_BUILT_IN
        .iter()
        .copied()
        .filter(|m| !ours_builtin.contains(m) && ours_loaded.contains(m))
        .filter(|m| !theirs.iter().any(|t| t == m))
        .collect()
}

fn pyvenv_value<'a>(pyvenv: &'a str, key: &str) -> Option<&'a str> {
    pyvenv
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// The standard library a wheel installs beside its `ferricorn`
/// (`<prefix>/lib/ferricorn-python/lib/python3.X`, scripts/wheel-stdlib.py),
/// made for the CPython linked in: the interpreter's home. None for the deb,
/// the rpm and `cargo build`, which use the venv's base Python's library.
pub fn bundled_home() -> Option<&'static Path> {
    static HOME: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let home = exe.parent()?.parent()?.join("lib/ferricorn-python");
        let lib = home.join(format!("lib/python{}", linked_version()));
        lib.join("os.py").is_file().then_some(home)
    })
    .as_deref()
}

/// With a wheel's standard library, the shared libraries its compiled
/// modules load (`needed-libraries`, listed when the wheel was built) must
/// be on this machine: a missing one is named at start with what to
/// install, rather than an ImportError in a worker.
pub fn check_installation() -> Result<(), String> {
    let Some(home) = bundled_home() else {
        return Ok(());
    };
    let list = home.join("needed-libraries");
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let known = LoaderPath::read();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(module) = words.next() else { continue };
        if let Some(lib) = words.find(|lib| !known.finds(lib)) {
            return Err(format!(
                "ferricorn's Python needs {lib} (for its module `{module}`), which this machine \
                 lacks: install {}",
                package_of(lib)
            ));
        }
    }
    Ok(())
}

/// What provides a shared library the standard library loads, to say
/// what to install.
fn package_of(lib: &str) -> String {
    const KNOWN: &[(&str, &str, &str)] = &[
        ("libssl.so", "libssl3", "openssl-libs"),
        ("libcrypto.so", "libssl3", "openssl-libs"),
        ("libffi.so", "libffi8", "libffi"),
        ("libsqlite3.so", "libsqlite3-0", "sqlite-libs"),
        ("liblzma.so", "liblzma5", "xz-libs"),
        ("libbz2.so", "libbz2-1.0", "bzip2-libs"),
        ("libuuid.so", "libuuid1", "libuuid"),
        ("libz.so", "zlib1g", "zlib"),
        ("libexpat.so", "libexpat1", "expat"),
        ("libcrypt.so", "libcrypt1", "libxcrypt"),
    ];
    match KNOWN.iter().find(|(prefix, _, _)| lib.starts_with(prefix)) {
        Some((_, deb, rpm)) => {
            format!("it (Debian, Ubuntu: `apt install {deb}`; RHEL, Fedora: `dnf install {rpm}`)")
        }
        None => "the package that provides it".to_string(),
    }
}

/// Where the dynamic loader finds a library by its soname: the
/// directories of `LD_LIBRARY_PATH`, `/etc/ld.so.cache` (which lists every
/// library of the configured directories) and the trusted directories.
/// No crate reads the cache; a soname is found in it as a whole string.
struct LoaderPath {
    cache: Vec<u8>,
    dirs: Vec<PathBuf>,
}

impl LoaderPath {
    fn read() -> LoaderPath {
        let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        dirs.extend(
            [
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
            ]
            .map(PathBuf::from),
        );
        LoaderPath {
            cache: std::fs::read("/etc/ld.so.cache").unwrap_or_default(),
            dirs,
        }
    }

    fn finds(&self, soname: &str) -> bool {
        // Every entry's value is the library's path, ".../soname".
        let mut key = Vec::with_capacity(soname.len() + 2);
        key.push(b'/');
        key.extend_from_slice(soname.as_bytes());
        key.push(0);
        self.cache.windows(key.len()).any(|w| w == key.as_slice())
            || self.dirs.iter().any(|d| d.join(soname).exists())
    }
}

/// With a wheel's standard library as home, `site` adds the home's
/// site-packages for a venv made with `--system-site-packages`, not those
/// of the venv's base Python: these are they (Debian's `dist-packages`
/// included), where they exist.
pub fn base_site_packages(venv: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(venv.join("pyvenv.cfg")) else {
        return Vec::new();
    };
    let included = pyvenv_value(&text, "include-system-site-packages")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Some(home) = pyvenv_value(&text, "home").filter(|_| included && bundled_home().is_some())
    else {
        return Vec::new();
    };
    let base = Path::new(home).parent().unwrap_or(Path::new("/"));
    let mm = linked_version();
    let mut dirs = vec![
        base.join(format!("lib/python{mm}/site-packages")),
        base.join(format!("lib64/python{mm}/site-packages")),
    ];
    if base == Path::new("/usr") {
        // Debian's and Ubuntu's system Python.
        dirs.extend([
            PathBuf::from(format!("/usr/local/lib/python{mm}/dist-packages")),
            PathBuf::from("/usr/lib/python3/dist-packages"),
            PathBuf::from(format!("/usr/lib/python{mm}/dist-packages")),
        ]);
    }
    dirs.retain(|d| d.is_dir());
    dirs
}
