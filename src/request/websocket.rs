//! The app's side of a WebSocket connection (asgi): messages each way,
//! carried by the I/O thread's task in `crate::http::websocket`.

use bytes::Bytes;
use tokio::sync::mpsc;

/// From the socket to the app.
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    /// The connection is over: close code and reason.
    Closed(u16, String),
}

/// From the app to the socket.
pub enum Outgoing {
    Text(String),
    Binary(Bytes),
    Close(u16, String),
}

/// The app's ends of a WebSocket connection.
pub struct AppSide {
    pub incoming: mpsc::Receiver<Incoming>,
    pub outgoing: mpsc::Sender<Outgoing>,
}
