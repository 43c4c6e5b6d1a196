//! The I/O side: hyper glue, the framing authority, the per-connection
//! service, request bodies, idle and slow connections, WebSockets.

pub mod framing;
pub mod head;
pub mod idle;
pub mod pace;
pub mod preface;
pub mod proxy_protocol;
pub mod request_body;
pub mod service;
pub mod shutdown;
pub mod websocket;
