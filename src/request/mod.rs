//! What a request carries between the I/O side (`http`, hyper's thread) and
//! the app side (`wsgi`, `asgi`): the request handed over (`Job`), its body
//! on the way in (`BodyReader`) and the response on the way out
//! (`ResponseBody`), WebSocket channels, how app code waits for the I/O
//! thread (`Wait`, `Hub`), and what every answered request leaves behind
//! (`Ledger`). Both sides depend on this layer, never on each other.

pub mod body_reader;
pub mod deadline;
pub mod fields;
pub mod forwarded;
pub mod hub;
pub mod ledger;
pub mod outbox;
pub mod response;
pub mod response_body;
pub mod target;
pub mod wait;
pub mod websocket;

use http::Response;
use http::request::Parts;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

pub use body_reader::BodyReader;
pub use deadline::Deadline;
pub use hub::Hub;
pub use ledger::{Answer, Ledger, Stats};
pub use response_body::{BusyGuard, ResponseBody};
pub use wait::Wait;

/// The other end of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    pub fn ip_string(&self) -> String {
        match self {
            Peer::Tcp(sa) => sa.ip().to_string(),
            Peer::Unix => "unix".into(),
        }
    }
}

/// The listener's own address: SERVER_NAME/SERVER_PORT when there is no Host header.
pub struct Local {
    pub host: String,
    pub port: String,
}

/// One request handed from the I/O thread to the app side.
pub struct Job {
    pub parts: Parts,
    pub body: Option<BodyReader>,
    pub peer: Peer,
    pub local: Arc<Local>,
    pub reply: oneshot::Sender<Response<ResponseBody>>,
    pub busy: BusyGuard,
    pub started: Instant,
    /// asgi: the request asks for a WebSocket.
    pub websocket: Option<websocket::AppSide>,
    /// `--request-timeout`, when set.
    pub deadline: Option<Arc<Deadline>>,
}

/// Where the I/O side sends a request: implemented by the worker (its app
/// threads' queue, or the event loop's hub), so `http` needs no worker.
pub trait Dispatch: Send + Sync {
    /// A job sent is always taken: the receiver lives as long as the worker.
    fn send(&self, job: Job);
    /// A request is in flight again after none was.
    fn busy(&self) {}
    /// A request ran past `--request-timeout` and the client was answered:
    /// stop it as the worker class can (I/O thread; must not block).
    fn expired(&self, _deadline: Arc<Deadline>) {}
}

/// A complete response and where it goes.
pub struct Finished {
    pub reply: oneshot::Sender<Response<ResponseBody>>,
    pub response: Response<ResponseBody>,
}

impl Finished {
    pub fn send(self) {
        // The client may have gone meanwhile; hyper then drops the response.
        let _ = self.reply.send(self.response);
    }
}
