//! The accept loop: one per listening socket, a connection slot per
//! connection, and a step back when other workers hold fewer connections
//! (see `crate::listen::balance`).

use socket2::{SockAddr, Socket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::serve::{Conf, connection, stopping};
use crate::error;
use crate::http::service::Shared;
use crate::listen::balance::Seat;
use crate::wsgi::{Local, Peer};

/// How long a worker ahead of the others waits before it accepts anyway.
const DEFER: Duration = Duration::from_millis(1);

pub(super) struct Acceptor {
    pub slots: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub shared: Arc<Shared>,
    pub conf: Arc<Conf>,
    pub local: Arc<Local>,
}

impl Acceptor {
    /// The loop for one non-blocking listening socket, to be spawned.
    pub fn start(
        self,
        fd: OwnedFd,
        unix: bool,
    ) -> std::io::Result<impl Future<Output = ()> + use<>> {
        // SAFETY: the Socket owns its descriptor for as long as the AsyncFd
        // holds it, and as_raw_fd always returns that same descriptor.
        let listener =
            unsafe { AsyncFd::register_with_interest(Socket::from(fd), Interest::READABLE) }?;
        Ok(self.run(listener, unix))
    }

    async fn run(self, listener: AsyncFd<Socket>, unix: bool) {
        let mut shutdown = self.shutdown.clone();
        let seat = self.conf.seat;
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopping(&mut shutdown) => break,
            };
            let mut ready = tokio::select! {
                r = listener.readable() => match r {
                    Ok(ready) => ready,
                    Err(e) => {
                        error!("waiting for connections failed: {e}");
                        break;
                    }
                },
                _ = stopping(&mut shutdown) => break,
            };
            if seat.is_some_and(|s| s.ahead()) {
                // Leave this connection to a worker that holds fewer.
                tokio::select! {
                    _ = tokio::time::sleep(DEFER) => {}
                    _ = stopping(&mut shutdown) => break,
                }
            }
            let accepted = match ready.try_io(|l| {
                l.get_ref()
                    .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            }) {
                Ok(accepted) => accepted,
                // Another worker took it.
                Err(_would_block) => continue,
            };
            match accepted {
                Ok((socket, addr)) => self.serve(socket, addr, unix, permit),
                // The client gave up before we accepted: nothing to serve.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn serve(&self, socket: Socket, addr: SockAddr, unix: bool, permit: OwnedSemaphorePermit) {
        let (shared, conf, local) = (self.shared.clone(), self.conf.clone(), self.local.clone());
        let shutdown = self.shutdown.clone();
        let held = Held::new(conf.seat, permit);
        if unix {
            match tokio::net::UnixStream::from_std(socket.into()) {
                Ok(stream) => {
                    tokio::spawn(async move {
                        connection(stream, Peer::Unix, shared, conf, local, shutdown).await;
                        drop(held);
                    });
                }
                Err(e) => error!("accept failed: {e}"),
            }
            return;
        }
        // Responses are written whole or in deliberate pieces (streams):
        // Nagle's algorithm would hold each last piece for the client's
        // delayed ACK (40 ms per streamed response).
        let _ = socket.set_tcp_nodelay(true);
        let (Some(addr), Ok(stream)) = (
            addr.as_socket(),
            tokio::net::TcpStream::from_std(socket.into()),
        ) else {
            error!("accept failed: not a TCP connection");
            return;
        };
        tokio::spawn(async move {
            connection(stream, Peer::Tcp(addr), shared, conf, local, shutdown).await;
            drop(held);
        });
    }
}

/// A connection's slot and its count on the board, given back when dropped
/// (also if the connection's task ends early).
struct Held {
    seat: Option<Seat>,
    _permit: OwnedSemaphorePermit,
}

impl Held {
    fn new(seat: Option<Seat>, permit: OwnedSemaphorePermit) -> Held {
        if let Some(seat) = seat {
            seat.joined();
        }
        Held {
            seat,
            _permit: permit,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(seat) = self.seat {
            seat.left();
        }
    }
}
