//! Talking to systemd: sd_notify messages and watchdog pings from the master.

pub mod notify;
pub mod watchdog;
