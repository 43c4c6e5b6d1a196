//! TLS with rustls: gunicorn's TLS settings (`certfile`, `keyfile`,
//! `ca_certs`, `cert_reqs`, `ciphers`) read into one rustls `ServerConfig`.
//!
//! The master builds it while it loads its configuration (at start, on HUP,
//! and in the new image after USR2), so a key readable only by root is read
//! before any worker drops privileges, and a worker forked afterwards
//! inherits the certificates as they were then: HUP rotates them without
//! touching a connection of the old workers.

mod ciphers;
mod info;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

pub use info::TlsInfo;

/// `--cert-reqs`, as Python's `ssl` numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// 0, `CERT_NONE`: none asked for.
    None,
    /// 1, `CERT_OPTIONAL`: asked for, verified when given.
    Optional,
    /// 2, `CERT_REQUIRED`: a connection without a valid one is refused.
    Required,
}

impl ClientCerts {
    pub fn from_setting(n: u32) -> Option<ClientCerts> {
        match n {
            0 => Some(ClientCerts::None),
            1 => Some(ClientCerts::Optional),
            2 => Some(ClientCerts::Required),
            _ => None,
        }
    }
}

/// What the server's TLS is made of, as the settings name it.
pub struct Files<'a> {
    pub certfile: &'a Path,
    /// None: the key is in `certfile` too (as Python's `load_cert_chain`).
    pub keyfile: Option<&'a Path>,
    pub ca_certs: Option<&'a Path>,
    pub client_certs: ClientCerts,
    pub ciphers: Option<&'a str>,
    /// ALPN protocol names, the server's preference first.
    pub alpn: Vec<Vec<u8>>,
}

/// A setting that cannot be served, with the one line that says why.
#[derive(Debug)]
pub struct Refused {
    pub setting: &'static str,
    pub message: String,
}

impl Refused {
    fn new(setting: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            setting,
            message: message.into(),
        }
    }
}

/// The server's TLS configuration, shared by every connection of every worker.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read the certificate chain, the key and the client CAs.
    pub fn load(files: &Files<'_>) -> Result<Tls, Refused> {
        let provider = Arc::new(ciphers::provider(files.ciphers)?);
        let chain = certificates(files.certfile, "certfile")?;
        let key = match files.keyfile {
            Some(path) => private_key(path, "keyfile")?,
            None => private_key(files.certfile, "certfile")
                .map_err(|r| Refused::new("keyfile", format!("{} (or set keyfile)", r.message)))?,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Refused::new("ciphers", format!("{e}")))?;
        let builder = match (files.client_certs, files.ca_certs) {
            (ClientCerts::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(Refused::new(
                    "cert_reqs",
                    "client certificates are asked for (cert_reqs 1 or 2) but no ca_certs is set to verify them against",
                ));
            }
            (wanted, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, "ca_certs")? {
                    roots
                        .add(cert)
                        .map_err(|e| Refused::new("ca_certs", format!("{}: {e}", ca.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match wanted {
                    ClientCerts::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| Refused::new("ca_certs", format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            Refused::new(
                "keyfile",
                format!(
                    "{}: {e} (is it the key of {}?)",
                    files.keyfile.unwrap_or(files.certfile).display(),
                    files.certfile.display()
                ),
            )
        })?;
        config.alpn_protocols = files.alpn.clone();
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, Refused> {
    std::fs::read(path).map_err(|e| Refused::new(setting, format!("{}: {e}", path.display())))
}

fn certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Refused> {
    let pem = read(path, setting)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Refused::new(setting, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Refused::new(
            setting,
            format!(
                "{}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE----- is expected)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, setting: &'static str) -> Result<PrivateKeyDer<'static>, Refused> {
    let pem = read(path, setting)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key in it (a PEM file with -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY is expected; encrypted keys are not read)".to_string()
            }
            e => e.to_string(),
        };
        Refused::new(setting, format!("{}: {why}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_reqs_numbers_are_pythons() {
        assert_eq!(ClientCerts::from_setting(0), Some(ClientCerts::None));
        assert_eq!(ClientCerts::from_setting(2), Some(ClientCerts::Required));
        assert_eq!(ClientCerts::from_setting(3), None);
    }
}
