//! Local-time stamps in the two formats gunicorn users grep for.

fn now_local() -> libc::tm {
    // SAFETY: time() and localtime_r() write only into the struct we own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    }
}

fn offset(tm: &libc::tm) -> String {
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!("{sign}{:02}{:02}", off / 60, off % 60)
}

/// `2026-01-01 12:00:00 +0000`, the error log's stamp.
pub fn error_time() -> String {
    let tm = now_local();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset(&tm)
    )
}

/// `[01/Jan/2026:12:00:00 +0000]`, the access log's `%(t)s`.
pub fn access_time() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tm = now_local();
    format!(
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} {}]",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset(&tm)
    )
}
