//! Process titles visible to `ps`, `top` and systemd (`ferricorn: worker [app]`).
//!
//! `/proc/PID/cmdline` is the process's own argv block, so a real title means
//! overwriting that memory in place, as Python's setproctitle does: the
//! environment strings that follow argv are copied elsewhere first, and the
//! whole contiguous argv+environ area becomes the title. Rust's std keeps
//! pointers into argv, so everything that needs the command line must read it
//! before the first `set`.

use std::ffi::{CStr, c_char, c_int};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());
static AREA: Mutex<Option<(usize, usize)>> = Mutex::new(None);

unsafe extern "C" {
    static mut environ: *mut *mut c_char;
}

// glibc passes (argc, argv, envp) to .init_array functions; this is how we
// learn where the argv block lives.
#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, _envp: *mut *mut c_char) {
    ARGC.store(argc.max(0) as usize, Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
}

/// Find the argv+environ area and move the environment out of it (once).
fn area() -> Option<(usize, usize)> {
    let mut guard = AREA.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_some() {
        return *guard;
    }
    let argv = ARGV.load(Ordering::Relaxed);
    let argc = ARGC.load(Ordering::Relaxed);
    if argv.is_null() || argc == 0 {
        return None;
    }
    // SAFETY: argv/environ are the kernel-provided, NUL-terminated arrays of
    // NUL-terminated strings; we only read them until the terminator and copy
    // the environment strings before anything overwrites them.
    unsafe {
        let start = *argv as usize;
        let mut end = start;
        for i in 0..argc {
            let p = *argv.add(i);
            if p.is_null() || p as usize != end && i > 0 {
                break;
            }
            end = p as usize + CStr::from_ptr(p).to_bytes().len() + 1;
        }
        let env = environ;
        if !env.is_null() {
            let mut copies: Vec<*mut c_char> = Vec::new();
            let mut i = 0;
            loop {
                let p = *env.add(i);
                if p.is_null() {
                    break;
                }
                if p as usize == end {
                    end = p as usize + CStr::from_ptr(p).to_bytes().len() + 1;
                }
                copies.push(libc::strdup(p));
                i += 1;
            }
            copies.push(std::ptr::null_mut());
            let leaked = Box::leak(copies.into_boxed_slice());
            environ = leaked.as_mut_ptr();
        }
        *guard = Some((start, end));
    }
    *guard
}

/// Set the title shown by `ps` (and the 15-byte short name shown by `top`).
pub fn set(title: &str) {
    let short: Vec<u8> = title.bytes().filter(|&b| b != 0).take(15).collect();
    let short = std::ffi::CString::new(short).unwrap_or_default();
    let _ = nix::sys::prctl::set_name(&short);

    let Some((start, end)) = area() else { return };
    let len = end - start;
    if len < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: [start, end) is the process's own argv+environ block, whose
    // environment we moved away in area(); nothing else points into it.
    unsafe {
        let dst = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
        std::ptr::write_bytes(dst.add(n), 0, len - n);
    }
}
