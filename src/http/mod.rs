//! hyper glue: the per-connection service, request limits, response bodies, idle connections.

pub mod body;
pub mod fields;
pub mod framing;
pub mod head;
pub mod idle;
pub mod pace;
pub mod request_body;
pub mod service;
pub mod websocket;

pub use body::ResponseBody;
