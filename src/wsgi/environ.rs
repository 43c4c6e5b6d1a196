//! Building the WSGI environ: interned keys, a per-worker template, and the
//! per-request values gunicorn sets.

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Version};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::request::forwarded::{Forwarded, Role};
use crate::request::target::{RawTarget, percent_decode};
use crate::request::{Local, Peer};
use crate::tls::TlsInfo;

/// Request headers common enough to keep their `HTTP_*` key interned.
const COMMON_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "connection",
    "cookie",
    "referer",
    "origin",
    "cache-control",
    "pragma",
    "authorization",
    "upgrade-insecure-requests",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-protocol",
    "x-real-ip",
    "x-requested-with",
    "x-request-id",
    "x-csrftoken",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "range",
    "dnt",
    "te",
    "expect",
    "transfer-encoding",
    "content-encoding",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "upgrade",
    "via",
    "forwarded",
    "priority",
    "sec-gpc",
    "traceparent",
    "tracestate",
    "x-amzn-trace-id",
    "x-forwarded-prefix",
];

/// Interned keys and constant values, made once per worker.
pub struct Keys {
    /// Header names with an underscore get an `HTTP_*` key (gunicorn's
    /// `header_map = "dangerous"`); by default they are left out.
    pub underscore_headers: bool,
    /// Underscore names a trusted proxy may still send (gunicorn's
    /// `forwarder_headers`), lowercase as hyper gives them.
    pub forwarder_headers: Vec<String>,
    request_method: Py<PyString>,
    path_info: Py<PyString>,
    query_string: Py<PyString>,
    raw_uri: Py<PyString>,
    server_protocol: Py<PyString>,
    server_name: Py<PyString>,
    server_port: Py<PyString>,
    http_host: Py<PyString>,
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    content_type: Py<PyString>,
    content_length: Py<PyString>,
    wsgi_input: Py<PyString>,
    wsgi_url_scheme: Py<PyString>,
    http: Py<PyString>,
    https: Py<PyString>,
    http10: Py<PyString>,
    http11: Py<PyString>,
    http2: Py<PyString>,
    empty: Py<PyString>,
    methods: Vec<(Method, Py<PyString>)>,
    headers: HashMap<HeaderName, (Py<PyString>, Role), BuildHasherDefault<NameHasher>>,
    script_name: String,
    recent: Mutex<Recent>,
}

/// Strings the last request made that the next one very likely makes again:
/// a worker's requests nearly all name the same Host, and behind a proxy
/// they all come from the same address. Python strings are immutable, so
/// one object can serve many environs.
#[derive(Default)]
struct Recent {
    host: Option<HostStrings>,
    addr: Option<(IpAddr, Py<PyString>)>,
}

/// HTTP_HOST, SERVER_NAME and SERVER_PORT for one Host header.
struct HostStrings {
    raw: Box<[u8]>,
    https: bool,
    value: Py<PyString>,
    name: Py<PyString>,
    port: Py<PyString>,
}

/// The interned-key table is looked up once per request header. Its keys
/// are fixed at start-up and chosen by us, so it needs no defence against
/// collisions: SipHash's set-up and finish would cost more than the lookup.
#[derive(Default)]
struct NameHasher(u64);

impl NameHasher {
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    // Standard header names hash as enum discriminants: integers get one
    // step each instead of a loop over their bytes.
    fn write_u8(&mut self, b: u8) {
        self.mix(u64::from(b));
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Keys {
    pub fn new(py: Python<'_>) -> Keys {
        let i = |s: &str| PyString::intern(py, s).unbind();
        let methods = [
            Method::GET,
            Method::POST,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ]
        .into_iter()
        .map(|m| {
            let s = i(m.as_str());
            (m, s)
        })
        .collect();
        let headers = COMMON_HEADERS
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_static(h);
                let key = header_key_string(h, false)?;
                Some((name, (i(&key), Role::of(h))))
            })
            .collect();
        Keys {
            underscore_headers: false,
            forwarder_headers: Vec::new(),
            request_method: i("REQUEST_METHOD"),
            path_info: i("PATH_INFO"),
            query_string: i("QUERY_STRING"),
            raw_uri: i("RAW_URI"),
            server_protocol: i("SERVER_PROTOCOL"),
            server_name: i("SERVER_NAME"),
            server_port: i("SERVER_PORT"),
            http_host: i("HTTP_HOST"),
            remote_addr: i("REMOTE_ADDR"),
            remote_port: i("REMOTE_PORT"),
            content_type: i("CONTENT_TYPE"),
            content_length: i("CONTENT_LENGTH"),
            wsgi_input: i("wsgi.input"),
            wsgi_url_scheme: i("wsgi.url_scheme"),
            http: i("http"),
            https: i("https"),
            http10: i("HTTP/1.0"),
            http11: i("HTTP/1.1"),
            // gunicorn's spelling for HTTP/2 requests.
            http2: i("HTTP/2.0"),
            empty: i(""),
            methods,
            headers,
            script_name: std::env::var("SCRIPT_NAME").unwrap_or_default(),
            recent: Mutex::default(),
        }
    }

    /// HTTP_HOST, SERVER_NAME and SERVER_PORT for a Host header, made again
    /// only when it differs from the last one.
    fn host_strings<'py>(
        &self,
        py: Python<'py>,
        host: &str,
        https: bool,
    ) -> [Bound<'py, PyString>; 3] {
        // Only ever taken with the GIL held, so never contended.
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let hit = recent
            .host
            .as_ref()
            .is_some_and(|h| h.https == https && *h.raw == *host.as_bytes());
        if !hit {
            let (name, port) = split_host(host, if https { "443" } else { "80" });
            recent.host = Some(HostStrings {
                raw: host.as_bytes().into(),
                https,
                value: PyString::new(py, host).unbind(),
                name: PyString::new(py, name).unbind(),
                port: PyString::new(py, port).unbind(),
            });
        }
        let h = recent.host.as_ref().expect("just filled");
        [
            h.value.bind(py).clone(),
            h.name.bind(py).clone(),
            h.port.bind(py).clone(),
        ]
    }

    /// REMOTE_ADDR, made again only when the peer's address changes.
    fn addr_string<'py>(&self, py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match &recent.addr {
            Some((last, s)) if *last == ip => s.bind(py).clone(),
            _ => {
                let mut buf = [0u8; IP_TEXT_MAX];
                let s = latin1(py, ip_text(ip, &mut buf));
                recent.addr = Some((ip, s.clone().unbind()));
                s
            }
        }
    }

    /// Whether a trusted proxy may send this header name (lowercase).
    fn forwards(&self, name: &str) -> bool {
        self.forwarder_headers.iter().any(|f| f == name)
    }

    pub fn script_name(&self) -> &str {
        &self.script_name
    }

    /// Give the template every key that `fill` sets on every request, so
    /// that a request's copy only replaces values (a copy of the bare
    /// template grew its table twice per request), and the most common
    /// value where `fill` leaves it alone when the request has that value.
    pub fn reserve_slots(&self, py: Python<'_>, template: &Bound<'_, PyDict>) -> PyResult<()> {
        for (key, value) in [
            (&self.request_method, &self.empty),
            (&self.path_info, &self.empty),
            (&self.query_string, &self.empty),
            (&self.raw_uri, &self.empty),
            (&self.server_protocol, &self.http11),
            (&self.remote_addr, &self.empty),
            (&self.remote_port, &self.empty),
            (&self.wsgi_input, &self.empty),
            (&self.wsgi_url_scheme, &self.http),
            (&self.server_name, &self.empty),
            (&self.server_port, &self.empty),
        ] {
            template.set_item(key.bind(py), value.bind(py))?;
        }
        Ok(())
    }
}

/// Header fields a request can add to its copy of the template before
/// CPython has to grow (re-hash) that copy.
const FIELD_ROOM: usize = 16;

/// Leave room in the template's table for a request's header fields.
///
/// `PyDict_Copy` copies a dict's table as it is, and the template comes out
/// of its last growth nearly full (20 keys where the table holds 21), so
/// with curl's three fields every request's copy grew once (about 1,000
/// instructions of the app thread). The template's table is grown once more
/// with placeholder keys, deleted again. Measured rather than computed, as
/// the growth rule is CPython's own: if copies do not come out with the
/// room, a compact template is used as before.
pub fn make_room<'py>(template: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let py = template.py();
    if room(&template)? >= FIELD_ROOM {
        return Ok(template);
    }
    // Bounded: a table grows long before this many more keys.
    let (added, _) = add_until_grown(&template, 64)?;
    for n in 0..added {
        template.del_item(placeholder(py, n))?;
    }
    if room(&template)? >= FIELD_ROOM {
        return Ok(template);
    }
    // Deleted keys left too many marks for CPython to copy the table as it
    // is: every copy would be built key by key. Start from a compact one.
    let compact = PyDict::new(py);
    compact.update(template.as_mapping())?;
    Ok(compact)
}

/// How many new keys a copy of `d` takes before its table grows (at most `FIELD_ROOM`).
fn room(d: &Bound<'_, PyDict>) -> PyResult<usize> {
    match add_until_grown(&d.copy()?, FIELD_ROOM)? {
        (added, true) => Ok(added - 1),
        (_, false) => Ok(FIELD_ROOM),
    }
}

/// Add placeholder keys to `d` until its table grows or `limit` are in:
/// how many were added, and whether it grew.
fn add_until_grown(d: &Bound<'_, PyDict>, limit: usize) -> PyResult<(usize, bool)> {
    let size = sizeof(d)?;
    for n in 0..limit {
        d.set_item(placeholder(d.py(), n), d.py().None())?;
        if sizeof(d)? != size {
            return Ok((n + 1, true));
        }
    }
    Ok((limit, false))
}

fn sizeof(d: &Bound<'_, PyDict>) -> PyResult<usize> {
    d.call_method0(pyo3::intern!(d.py(), "__sizeof__"))?
        .extract()
}

fn placeholder(py: Python<'_>, n: usize) -> Bound<'_, PyString> {
    PyString::new(py, &format!("ferricorn.room.{n}"))
}

/// `content-type` → None (it has its own key); `x-a_b` → None (gunicorn drops `_` names).
fn header_key_string(name: &str, underscores: bool) -> Option<String> {
    if (name.contains('_') && !underscores) || name == "content-type" || name == "content-length" {
        return None;
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    Some(key)
}

/// Bytes as a Python str, one code point per byte (PEP 3333's latin-1 rule).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: PyUnicode_DecodeLatin1 reads exactly `len` bytes from a valid
    // slice and returns a new reference (latin-1 decoding cannot fail except
    // on memory exhaustion, which pyo3 turns into a panic here).
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr() as *const std::ffi::c_char,
            bytes.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// Fill a copy of the worker's template environ for one request.
#[allow(clippy::too_many_arguments)]
pub fn fill<'py>(
    py: Python<'py>,
    keys: &Keys,
    env: &Bound<'py, PyDict>,
    parts: &Parts,
    peer: &Peer,
    local: &Local,
    forwarded: &Forwarded,
    input: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let k = |key: &Py<PyString>| key.bind(py).clone();
    let method = keys
        .methods
        .iter()
        .find(|(m, _)| m == parts.method)
        .map(|(_, s)| s.bind(py).clone())
        .unwrap_or_else(|| PyString::new(py, parts.method.as_str()));
    env.set_item(k(&keys.request_method), method)?;

    let trusted = match peer {
        Peer::Unix => true,
        Peer::Tcp(sa) => forwarded.allow_all || forwarded.allow.contains(&sa.ip()),
    };
    let uri = &parts.uri;
    // hyper drops a fragment and got some targets escaped: those come as sent.
    let raw_target = parts.extensions.get::<RawTarget>();
    let query = match raw_target {
        Some(raw) => raw.path_and_query().1,
        None => uri.query().map(str::as_bytes),
    };
    // No query: the template's empty QUERY_STRING stands.
    if let Some(q) = query {
        env.set_item(k(&keys.query_string), latin1(py, q))?;
    }
    let raw = match uri.path_and_query() {
        _ if raw_target.is_some() => PyString::new(py, raw_target.map_or("", RawTarget::as_str)),
        Some(pq) if uri.scheme().is_none() => PyString::new(py, pq.as_str()),
        _ => PyString::new(py, &uri.to_string()),
    };
    env.set_item(k(&keys.raw_uri), raw)?;
    // HTTP/1.1 is the template's.
    if parts.version == Version::HTTP_10 {
        env.set_item(k(&keys.server_protocol), k(&keys.http10))?;
    } else if parts.version == Version::HTTP_2 {
        env.set_item(k(&keys.server_protocol), k(&keys.http2))?;
    }
    let tls = parts.extensions.get::<Arc<TlsInfo>>();
    if let Some(tls) = tls {
        // What gunicorn's apps read from the SSLSocket, in mod_ssl's names.
        env.set_item("SSL_PROTOCOL", tls.version_name)?;
        env.set_item("SSL_CIPHER", tls.cipher_name)?;
        if let Some(cert) = tls.client_cert() {
            env.set_item("SSL_CLIENT_CERT", cert)?;
        }
        if let Some(name) = &tls.client_name {
            env.set_item("SSL_CLIENT_S_DN", name)?;
        }
    }

    match peer {
        Peer::Tcp(sa) => {
            env.set_item(k(&keys.remote_addr), keys.addr_string(py, sa.ip()))?;
            let mut buf = [0u8; 5];
            env.set_item(
                k(&keys.remote_port),
                latin1(py, port_text(sa.port(), &mut buf)),
            )?;
        }
        // No address: the template's empty strings stand.
        Peer::Unix => {}
    }
    env.set_item(k(&keys.wsgi_input), input)?;

    // One pass: a header sent more than once comes out as consecutive
    // values under the same name (joined with commas, as gunicorn does).
    // The headers with a role beyond their HTTP_* key are noted on the way
    // (their first value, as `HeaderMap::get` gives it).
    let mut host: Option<&HeaderValue> = None;
    let mut host_set = false;
    let mut forwarded_https = false;
    let mut forwarded_script = None;
    let mut headers = parts.headers.iter().peekable();
    while let Some((name, first)) = headers.next() {
        let (key, role) = if name == http::header::CONTENT_TYPE {
            (k(&keys.content_type), Role::Plain)
        } else if name == http::header::CONTENT_LENGTH {
            (k(&keys.content_length), Role::Plain)
        } else if let Some((key, role)) = keys.headers.get(name) {
            (k(key), *role)
        } else {
            let forwarder = trusted && keys.forwards(name.as_str());
            if forwarder && name.as_str() == "script_name" {
                forwarded_script = first.to_str().ok();
            }
            match header_key_string(name.as_str(), keys.underscore_headers || forwarder) {
                Some(s) => (PyString::new(py, &s), Role::Plain),
                None => {
                    while headers.next_if(|(n, _)| *n == name).is_some() {}
                    continue;
                }
            }
        };
        if role == Role::Host {
            host = Some(first);
        }
        forwarded_https |= role.says_https(first);
        let value = match headers.next_if(|(n, _)| *n == name) {
            // A single Host: HTTP_HOST comes from the recent strings below.
            None if role == Role::Host && first.to_str().is_ok() => continue,
            None => latin1(py, first.as_bytes()),
            Some((_, second)) => {
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(std::iter::from_fn(|| {
                    headers.next_if(|(n, _)| *n == name).map(|(_, v)| v)
                })) {
                    joined.push(b',');
                    joined.extend_from_slice(v.as_bytes());
                }
                latin1(py, &joined)
            }
        };
        host_set |= role == Role::Host;
        env.set_item(key, value)?;
    }

    // A trusted proxy's SCRIPT_NAME header mounts the app, as in gunicorn.
    if let Some(script) = forwarded_script {
        env.set_item("SCRIPT_NAME", script)?;
    }
    let decoded = percent_decode(uri.path());
    let script = forwarded_script.unwrap_or(keys.script_name());
    let path_info: &[u8] = if !script.is_empty() && decoded.starts_with(script.as_bytes()) {
        &decoded[script.len()..]
    } else {
        &decoded
    };
    env.set_item(k(&keys.path_info), latin1(py, path_info))?;
    let https = tls.is_some() || (trusted && forwarded_https);
    // "http" is the template's.
    if https {
        env.set_item(k(&keys.wsgi_url_scheme), k(&keys.https))?;
    }
    match host.and_then(|h| h.to_str().ok()) {
        Some(host) => {
            let [value, name, port] = keys.host_strings(py, host, https);
            if !host_set {
                env.set_item(k(&keys.http_host), value)?;
            }
            env.set_item(k(&keys.server_name), name)?;
            env.set_item(k(&keys.server_port), port)?;
        }
        None => {
            env.set_item(k(&keys.server_name), PyString::new(py, &local.host))?;
            env.set_item(k(&keys.server_port), PyString::new(py, &local.port))?;
        }
    }
    Ok(())
}

/// The longest text form of an IP address.
const IP_TEXT_MAX: usize = 45;

/// REMOTE_ADDR without the formatting machinery and a heap string per request.
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let mut digits = [0u8; 3];
                // Byte by byte: a memcpy call costs more than three stores.
                for &d in decimal(u16::from(octet), &mut digits) {
                    buf[n] = d;
                    n += 1;
                }
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // Cannot fail: the longest IPv6 text fits the buffer.
            let _ = write!(cursor, "{v6}");
            let n = cursor.position() as usize;
            &buf[..n]
        }
    }
}

fn port_text(port: u16, buf: &mut [u8; 5]) -> &[u8] {
    decimal(port, buf)
}

/// `n` in decimal, right-aligned in `buf`, which must hold all its digits.
fn decimal(mut n: u16, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn split_host<'a>(host: &'a str, default_port: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':').unwrap_or(default_port));
        }
        return (host, default_port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (host, default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        assert_eq!(
            header_key_string("x-request-id", false).as_deref(),
            Some("HTTP_X_REQUEST_ID")
        );
        assert_eq!(header_key_string("x_bad", false), None);
        assert_eq!(
            header_key_string("x_bad", true).as_deref(),
            Some("HTTP_X_BAD")
        );
        assert_eq!(header_key_string("content-type", false), None);
    }

    #[test]
    fn every_common_header_is_a_valid_distinct_name_with_a_key() {
        // HeaderName::from_static panics on a bad name: in a worker, at boot.
        let mut seen = std::collections::HashSet::new();
        for h in COMMON_HEADERS {
            let name = HeaderName::from_static(h);
            assert!(seen.insert(name), "{h} listed twice");
            let key =
                header_key_string(h, false).unwrap_or_else(|| panic!("{h} has no HTTP_* key"));
            assert!(key.starts_with("HTTP_") && !key.contains('-'), "{key}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(&*percent_decode("/a%20b/%E2%82%AC"), b"/a b/\xe2\x82\xac");
        assert_eq!(&*percent_decode("/100%"), b"/100%");
        assert_eq!(&*percent_decode("/%zz"), b"/%zz");
    }

    #[test]
    fn addresses_as_text() {
        let mut buf = [0u8; IP_TEXT_MAX];
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.100",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed, &mut buf), ip.as_bytes());
        }
        let mut buf = [0u8; 5];
        for port in [0u16, 7, 80, 8080, 65535] {
            assert_eq!(port_text(port, &mut buf), port.to_string().as_bytes());
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            split_host("example.com:8080", "80"),
            ("example.com", "8080")
        );
        assert_eq!(split_host("example.com", "80"), ("example.com", "80"));
        assert_eq!(split_host("[::1]:81", "80"), ("::1", "81"));
    }
}
