//! What a worker tells the master over its status pipe.
//!
//! Each message is 16 bytes, well under PIPE_BUF, so a write is atomic and the
//! master never sees half a message from a worker.

/// gunicorn's exit codes for a worker that could not start.
pub const WORKER_BOOT_ERROR: i32 = 3;
pub const APP_LOAD_ERROR: i32 = 4;

pub const MSG_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The app is imported and the worker accepts connections.
    Booted = 1,
    /// The worker's loop is alive.
    Heartbeat = 2,
    /// An app thread is stuck past `--request-timeout`: boot a replacement,
    /// then retire this worker.
    Replace = 3,
    /// `--reload`: a source file changed; reload as on HUP.
    Reload = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    pub in_flight: u32,
    pub requests: u64,
}

impl Msg {
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0] = self.kind as u8;
        b[4..8].copy_from_slice(&self.in_flight.to_le_bytes());
        b[8..16].copy_from_slice(&self.requests.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Msg> {
        let kind = match b.first()? {
            1 => Kind::Booted,
            2 => Kind::Heartbeat,
            3 => Kind::Replace,
            4 => Kind::Reload,
            _ => return None,
        };
        Some(Msg {
            kind,
            in_flight: u32::from_le_bytes(b.get(4..8)?.try_into().ok()?),
            requests: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let m = Msg {
            kind: Kind::Heartbeat,
            in_flight: 3,
            requests: 1 << 40,
        };
        assert_eq!(Msg::decode(&m.encode()), Some(m));
        assert_eq!(Msg::decode(&[9; 16]), None);
    }
}
