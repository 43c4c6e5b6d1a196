//! `--user`, `--group`, `--initgroups`: resolved in the master, applied in workers.

use nix::unistd::{Gid, Group, Uid, User, getuid, initgroups, setgid, setgroups, setuid};
use std::ffi::CString;

pub fn lookup_user(name: &str) -> Result<libc::uid_t, String> {
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return Ok(uid);
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err("no such user".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    if let Ok(gid) = name.parse::<libc::gid_t>() {
        return Ok(gid);
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err("no such group".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn primary_group(uid: libc::uid_t) -> Option<libc::gid_t> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

/// Become the configured user and group (group first, while we still may).
pub fn drop_to(
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
    want_initgroups: bool,
) -> Result<(), String> {
    if let Some(gid) = gid {
        setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid({gid}): {e}"))?;
    }
    let Some(uid) = uid else {
        return Ok(());
    };
    if want_initgroups {
        if let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) {
            let name = CString::new(user.name).map_err(|e| format!("initgroups: {e}"))?;
            let group = gid.map_or(user.gid, Gid::from_raw);
            initgroups(&name, group).map_err(|e| format!("initgroups: {e}"))?;
        }
    } else if getuid().is_root() {
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    }
    setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid({uid}): {e}"))
}
