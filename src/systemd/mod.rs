//! Talking to systemd: sd_notify messages from the master.

pub mod notify;
