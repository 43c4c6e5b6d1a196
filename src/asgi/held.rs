//! A message on its way to the I/O thread through a bounded channel: sent
//! at once when there is room, otherwise held while the task awaits a token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{self, OwnedPermit};

use super::poll_token;
use crate::request::Hub;

type Room<T> = Pin<Box<dyn Future<Output = Result<OwnedPermit<T>, SendError<()>>> + Send>>;

/// What became of a message.
pub enum Sent {
    Done,
    /// Held: await this token, then `flush()`.
    Wait(u64),
    /// The receiver is gone (the client left).
    Gone,
}

/// One message at most, held while the channel is full.
pub struct Held<T> {
    held: Option<T>,
    room: Option<Room<T>>,
}

impl<T: Send + 'static> Held<T> {
    pub fn new() -> Held<T> {
        Held {
            held: None,
            room: None,
        }
    }

    pub fn send(&mut self, hub: &Arc<Hub>, tx: &mpsc::Sender<T>, msg: T) -> Sent {
        match tx.try_send(msg) {
            Ok(()) => Sent::Done,
            Err(TrySendError::Full(msg)) => {
                self.held = Some(msg);
                self.room = Some(Box::pin(tx.clone().reserve_owned()));
                self.flush(hub)
            }
            Err(TrySendError::Closed(_)) => Sent::Gone,
        }
    }

    /// Deliver the held message if there is room now.
    pub fn flush(&mut self, hub: &Arc<Hub>) -> Sent {
        let Some(room) = self.room.as_mut() else {
            return Sent::Done;
        };
        let permit = match poll_token(hub, |cx| room.as_mut().poll(cx)) {
            Err(token) => return Sent::Wait(token),
            Ok(p) => p,
        };
        self.room = None;
        match (permit, self.held.take()) {
            (Ok(permit), Some(msg)) => {
                permit.send(msg);
                Sent::Done
            }
            (Ok(_), None) => Sent::Done,
            (Err(_), _) => Sent::Gone,
        }
    }

    /// Drop what is held (and the channel handle its wait keeps).
    pub fn clear(&mut self) {
        self.held = None;
        self.room = None;
    }
}
