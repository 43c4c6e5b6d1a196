//! The `(name, value)` tuples an app passes to `start_response`, made into
//! hyper's header types.
//!
//! Most apps pass some tuples that are constants of their code (`("Content-Type",
//! "text/plain")`): one object for the life of the process. Checking such a
//! tuple and its two `str`s and finding the fields in the thread's table of
//! recent ones (`crate::request::fields`) cost about 300 instructions per
//! header and request; each app thread keeps what it made of the last few
//! tuples and finds them again by identity. The cache holds a reference to
//! every tuple it keeps, so an address it compares with can never belong to
//! another object.

use http::{HeaderName, HeaderValue, header};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use std::borrow::Cow;
use std::cell::RefCell;

use crate::request::response::{header_pair, hop_by_hop};

/// Tuples remembered per thread. Few: a miss compares with all of them.
const KEPT: usize = 8;

/// What a header tuple comes to on the wire.
#[derive(Clone)]
pub struct Converted {
    /// None for a hop-by-hop header, which the server owns (PEP 3333).
    pub header: Option<(HeaderName, HeaderValue)>,
    /// The value of a Content-Length header.
    pub content_length: Option<u64>,
}

struct Kept {
    tuple: Py<PyAny>,
    converted: Converted,
}

#[derive(Default)]
struct Cache {
    kept: Vec<Kept>,
    /// The slot the next new tuple replaces once all are taken.
    next: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// One item of the app's header list.
pub fn convert(item: &Bound<'_, PyAny>) -> PyResult<Converted> {
    let found = CACHE.with_borrow(|c| {
        c.kept
            .iter()
            .find(|k| k.tuple.as_ptr() == item.as_ptr())
            .map(|k| k.converted.clone())
    });
    if let Some(converted) = found {
        return Ok(converted);
    }
    let converted = convert_uncached(item)?;
    // Held by more than the app's list and our iterator: a constant (or
    // kept by the app), worth keeping. A tuple built for this response
    // would only push out one that comes back.
    if item.get_refcnt() > 2 {
        CACHE.with_borrow_mut(|c| {
            let kept = Kept {
                tuple: item.clone().unbind(),
                converted: converted.clone(),
            };
            if c.kept.len() < KEPT {
                c.kept.push(kept);
            } else {
                let slot = c.next;
                c.kept[slot] = kept;
                c.next = (slot + 1) % KEPT;
            }
        });
    }
    Ok(converted)
}

fn convert_uncached(item: &Bound<'_, PyAny>) -> PyResult<Converted> {
    let pair = item
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?;
    if pair.len() != 2 {
        return Err(PyTypeError::new_err(
            "headers must be a list of (name, value) tuples",
        ));
    }
    let (name, value) = header_pair(
        &latin1_bytes(&pair.get_item(0)?, "name")?,
        &latin1_bytes(&pair.get_item(1)?, "value")?,
    )?;
    if hop_by_hop(&name) {
        return Ok(Converted {
            header: None,
            content_length: None,
        });
    }
    let content_length = if name == header::CONTENT_LENGTH {
        let n = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| PyValueError::new_err(format!("invalid Content-Length {value:?}")))?;
        Some(n)
    } else {
        None
    };
    Ok(Converted {
        header: Some((name, value)),
        content_length,
    })
}

/// A str header field as latin-1 bytes (PEP 3333), refusing what is not.
/// ASCII, nearly every header, is borrowed from the str: no allocation.
fn latin1_bytes<'a>(s: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    let s = s.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "header {what} must be str, not {}",
            s.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(match text {
            Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
            Cow::Owned(t) => Cow::Owned(t.into_bytes()),
        });
    }
    text.chars()
        .map(|c| u8::try_from(c as u32).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
        .ok_or_else(|| PyValueError::new_err(format!("header {what} {text:?} is not latin-1")))
}
