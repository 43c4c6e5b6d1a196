//! What a request's app may know of the TLS connection it came on: what
//! gunicorn's apps find on `environ["gunicorn.socket"]` (an `SSLSocket`),
//! given as values, and the ASGI TLS extension's fields.

use rustls::ProtocolVersion;
use rustls::server::ServerConnection;

/// One TLS connection's facts, shared by its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The wire number (0x0304 for TLS 1.3), as the ASGI extension gives it.
    pub version: u16,
    /// `TLSv1.3`, as Python's `SSLSocket.version()` says it.
    pub version_name: &'static str,
    /// The IANA number of the suite, as the ASGI extension gives it.
    pub cipher: u16,
    /// Its name, as rustls spells it.
    pub cipher_name: &'static str,
    /// The client's verified certificate chain, its own first, in PEM.
    pub client_chain: Vec<String>,
    /// Its subject as RFC 4514 writes it (`CN=client,O=Example`).
    pub client_name: Option<String>,
}

impl TlsInfo {
    pub fn of(conn: &ServerConnection) -> TlsInfo {
        let (version, version_name) = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => (0x0304, "TLSv1.3"),
            Some(ProtocolVersion::TLSv1_2) => (0x0303, "TLSv1.2"),
            Some(v) => (u16::from(v), "TLS"),
            None => (0, ""),
        };
        let (cipher, cipher_name) = conn
            .negotiated_cipher_suite()
            .map(|s| (u16::from(s.suite()), s.suite().as_str().unwrap_or("")))
            .unwrap_or((0, ""));
        let peer = conn.peer_certificates().unwrap_or_default();
        TlsInfo {
            version,
            version_name,
            cipher,
            cipher_name,
            client_chain: peer.iter().map(|der| pem(der)).collect(),
            client_name: peer.first().and_then(|der| subject(der)),
        }
    }

    /// The client's own certificate in PEM, when it sent one.
    pub fn client_cert(&self) -> Option<&str> {
        self.client_chain.first().map(String::as_str)
    }
}

/// A certificate's subject as RFC 4514 writes it: the last RDN first,
/// `,` between RDNs, `+` within one, special characters escaped, a value
/// that is not a string as `#` and its hex (as the ASGI TLS extension's
/// `client_cert_name` and mod_ssl's `SSL_CLIENT_S_DN` give it).
fn subject(der: &[u8]) -> Option<String> {
    use x509_parser::objects::{oid_registry, oid2abbrev};
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<_> = cert.subject().iter().collect();
    let mut out = String::new();
    for rdn in rdns.into_iter().rev() {
        if !out.is_empty() {
            out.push(',');
        }
        for (i, attr) in rdn.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            match oid2abbrev(attr.attr_type(), oid_registry()) {
                Ok(name) => out.push_str(name),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_value(&mut out, value),
                Err(_) => {
                    out.push('#');
                    out.push_str(&data_encoding::HEXLOWER.encode(attr.as_slice()));
                }
            }
        }
    }
    Some(out)
}

/// RFC 4514, 2.4: the characters a value may not hold as they are.
fn escape_value(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A DER certificate as PEM, lines of 64 as OpenSSL writes them.
fn pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_is_escaped_as_rfc_4514_says() {
        let mut out = String::new();
        super::escape_value(&mut out, "#a, b+c ");
        assert_eq!(out, "\\#a\\, b\\+c\\ ");
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let pem = super::pem(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
