//! The request body, moved from hyper to the app side.
//!
//! A task on the I/O thread reads hyper's frames and feeds them to the
//! app's `BodyReader`. Reading frames on the thread that decodes them
//! matters: hyper decodes the next chunk only when the body is polled, so an
//! app thread polling directly would cost two thread wake-ups per chunk (a
//! client sending 7-byte chunks made an 8 MB upload take 20 s). The queue is
//! bounded, and the task stops when the app side is gone.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;

use super::idle::ConnState;
use crate::request::body_reader::{self, BodyError, BodyFeed, BodyReader};

/// Start reading `body` on the current (I/O) runtime.
/// `cut_is_end`: a body cut short by the end of the stream ends there (no error).
pub fn spawn(body: Incoming, conn: Arc<ConnState>, cut_is_end: bool) -> BodyReader {
    let (feed, reader) = body_reader::channel();
    tokio::spawn(pump(body, feed, conn, cut_is_end));
    reader
}

async fn pump(mut body: Incoming, feed: BodyFeed, conn: Arc<ConnState>, cut_is_end: bool) {
    let end = loop {
        if !feed.room().await {
            return;
        }
        match body.frame().await {
            None => break Ok(()),
            // A body the framing authority cut short says why; hyper only saw it end.
            Some(Err(e)) => match conn.body_refusal() {
                Some(r) => {
                    break Err(BodyError {
                        message: r.reason.to_string(),
                        status: r.status.as_u16(),
                    });
                }
                None if cut_is_end && cut_short(&e) => {
                    crate::warning!(
                        "Request body ended before its Content-Length: the client closed its side"
                    );
                    break Ok(());
                }
                None => {
                    break Err(BodyError {
                        message: e.to_string(),
                        status: 400,
                    });
                }
            },
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if !data.is_empty() {
                    feed.push(data);
                }
            }
        }
    };
    feed.end(end);
}

/// The stream ended in the middle of the body.
fn cut_short(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}
