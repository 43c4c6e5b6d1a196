//! `--user`, `--group`, `--initgroups`: resolved in the master, applied in workers.

use std::ffi::{CStr, CString};

pub fn lookup_user(name: &str) -> Result<libc::uid_t, String> {
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return Ok(uid);
    }
    let c = CString::new(name).map_err(|_| "contains a NUL byte".to_string())?;
    // SAFETY: getpwnam returns a pointer to static storage or NULL; the master
    // is single-threaded when it resolves settings.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err("no such user".into());
    }
    // SAFETY: pw is non-null and points at a valid passwd entry.
    Ok(unsafe { (*pw).pw_uid })
}

pub fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    if let Ok(gid) = name.parse::<libc::gid_t>() {
        return Ok(gid);
    }
    let c = CString::new(name).map_err(|_| "contains a NUL byte".to_string())?;
    // SAFETY: as for getpwnam above.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err("no such group".into());
    }
    // SAFETY: gr is non-null and points at a valid group entry.
    Ok(unsafe { (*gr).gr_gid })
}

pub fn primary_group(uid: libc::uid_t) -> Option<libc::gid_t> {
    // SAFETY: as for getpwnam above.
    let pw = unsafe { libc::getpwuid(uid) };
    // SAFETY: pw is checked for NULL before it is read.
    (!pw.is_null()).then(|| unsafe { (*pw).pw_gid })
}

/// Become the configured user and group (group first, while we still may).
pub fn drop_to(
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
    initgroups: bool,
) -> Result<(), String> {
    // SAFETY: plain credential syscalls on this process; pointers are valid C strings.
    unsafe {
        if let Some(gid) = gid
            && libc::setgid(gid) != 0
        {
            return Err(format!(
                "setgid({gid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Some(uid) = uid {
            if initgroups {
                let pw = libc::getpwuid(uid);
                if !pw.is_null() {
                    let name = CStr::from_ptr((*pw).pw_name);
                    let g = gid.unwrap_or((*pw).pw_gid);
                    if libc::initgroups(name.as_ptr(), g) != 0 {
                        return Err(format!("initgroups: {}", std::io::Error::last_os_error()));
                    }
                }
            } else if libc::getuid() == 0 && libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
            }
            if libc::setuid(uid) != 0 {
                return Err(format!(
                    "setuid({uid}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}
