//! The ASGI `http` connection scope of one request.

use http::Version;
use http::request::Parts;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::AsgiApp;
use crate::request::forwarded::is_https;
use crate::request::target::{RawTarget, percent_decode};
use crate::request::{Local, Peer};
use crate::tls::TlsInfo;
use std::sync::Arc;

pub fn http<'py>(
    py: Python<'py>,
    app: &AsgiApp,
    parts: &Parts,
    peer: &Peer,
    local: &Local,
) -> PyResult<Bound<'py, PyDict>> {
    let d = common(py, app, parts, peer, local, false)?;
    d.set_item(intern!(py, "type"), intern!(py, "http"))?;
    d.set_item(intern!(py, "method"), parts.method.as_str())?;
    Ok(d)
}

/// The `websocket` scope: no method, `ws`/`wss`, the offered subprotocols.
pub fn websocket<'py>(
    py: Python<'py>,
    app: &AsgiApp,
    parts: &Parts,
    peer: &Peer,
    local: &Local,
) -> PyResult<Bound<'py, PyDict>> {
    let d = common(py, app, parts, peer, local, true)?;
    d.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    let offered: Vec<String> = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    d.set_item(intern!(py, "subprotocols"), offered)?;
    Ok(d)
}

fn common<'py>(
    py: Python<'py>,
    app: &AsgiApp,
    parts: &Parts,
    peer: &Peer,
    local: &Local,
    websocket: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "asgi"), app.asgi.bind(py))?;
    d.set_item(
        intern!(py, "http_version"),
        match parts.version {
            Version::HTTP_10 => intern!(py, "1.0"),
            Version::HTTP_2 => intern!(py, "2"),
            _ => intern!(py, "1.1"),
        },
    )?;
    let tls = parts.extensions.get::<Arc<TlsInfo>>();

    let trusted = match peer {
        Peer::Unix => true,
        Peer::Tcp(sa) => app.forwarded.allow_all || app.forwarded.allow.contains(&sa.ip()),
    };
    let secure = tls.is_some() || (trusted && is_https(&parts.headers));
    let scheme = match (secure, websocket) {
        (true, false) => intern!(py, "https"),
        (false, false) => intern!(py, "http"),
        (true, true) => intern!(py, "wss"),
        (false, true) => intern!(py, "ws"),
    };
    d.set_item(intern!(py, "scheme"), scheme)?;

    let raw_path = parts.uri.path();
    let decoded = percent_decode(raw_path);
    let decoded = String::from_utf8_lossy(&decoded);
    // As uvicorn does: `path` includes the mount point, `root_path` names it.
    let path = if app.root_path.is_empty() || decoded.starts_with(&app.root_path) {
        PyString::new(py, &decoded)
    } else {
        PyString::new(py, &format!("{}{decoded}", app.root_path))
    };
    d.set_item(intern!(py, "path"), path)?;
    // hyper drops a fragment and got some targets escaped: those come as sent.
    let (raw_path, query) = match parts.extensions.get::<RawTarget>() {
        Some(raw) if raw.0.starts_with(b"/") => raw.path_and_query(),
        Some(raw) => (raw_path.as_bytes(), raw.path_and_query().1),
        None => (raw_path.as_bytes(), parts.uri.query().map(str::as_bytes)),
    };
    d.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
    d.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, query.unwrap_or(b"")),
    )?;
    d.set_item(intern!(py, "root_path"), app.root_path.as_str())?;

    let headers = PyList::empty(py);
    for (name, value) in &parts.headers {
        headers.append(PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value.as_bytes()),
            ],
        )?)?;
    }
    d.set_item(intern!(py, "headers"), headers)?;

    match peer {
        Peer::Tcp(sa) => d.set_item(
            intern!(py, "client"),
            (sa.ip().to_string(), sa.port()).into_pyobject(py)?,
        )?,
        Peer::Unix => d.set_item(intern!(py, "client"), py.None())?,
    }
    match local.port.parse::<u16>() {
        Ok(port) => d.set_item(intern!(py, "server"), (local.host.as_str(), port))?,
        Err(_) => d.set_item(intern!(py, "server"), py.None())?,
    }
    if let Some(tls) = tls {
        d.set_item(intern!(py, "extensions"), tls_extension(py, tls)?)?;
    }
    Ok(d)
}

/// The ASGI TLS extension (`scope["extensions"]["tls"]`).
fn tls_extension<'py>(py: Python<'py>, tls: &TlsInfo) -> PyResult<Bound<'py, PyDict>> {
    let ext = PyDict::new(py);
    ext.set_item(intern!(py, "server_cert"), py.None())?;
    ext.set_item(
        intern!(py, "client_cert_chain"),
        PyList::new(py, &tls.client_chain)?,
    )?;
    ext.set_item(intern!(py, "client_cert_name"), tls.client_name.as_deref())?;
    ext.set_item(intern!(py, "client_cert_error"), py.None())?;
    ext.set_item(intern!(py, "tls_version"), tls.version)?;
    ext.set_item(intern!(py, "cipher_suite"), tls.cipher)?;
    let extensions = PyDict::new(py);
    extensions.set_item(intern!(py, "tls"), ext)?;
    Ok(extensions)
}
