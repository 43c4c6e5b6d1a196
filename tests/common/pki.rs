//! Certificates for the TLS tests, made with the openssl command: a CA, a
//! server certificate for localhost and 127.0.0.1, and a client one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A server certificate's extensions: for localhost and 127.0.0.1.
pub const SERVER: &str = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";

pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.new_key(
            &["-x509", "-days", "2"],
            "ca.key",
            "ca.pem",
            "/CN=ferricorn test CA",
        );
        pki.issue("server", "/CN=localhost", SERVER);
        pki.issue(
            "client",
            "/O=Example, Inc./CN=test client",
            "extendedKeyUsage=clientAuth\n",
        );
        pki
    }

    /// A key and a certificate signed by the CA: NAME.key, NAME.pem.
    pub fn issue(&self, name: &str, subject: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.path().join(&ext), extensions).unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.new_key(&[], &key, &csr, subject);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// `openssl req` with a new P-256 key: a request, or with `-x509` a
    /// self-signed certificate.
    fn new_key(&self, extra: &[&str], key: &str, out: &str, subject: &str) {
        let mut args = vec!["req"];
        args.extend_from_slice(extra);
        args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            out,
            "-subj",
            subject,
        ]);
        self.openssl(&args);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A certificate's subject as OpenSSL writes it in RFC 2253/4514 form.
    pub fn subject(&self, file: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(self.path(file))
            .output()
            .expect("run openssl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("subject=")
            .to_string()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

/// Run tests/clients/tls_client.py with the test virtualenv's Python; its JSON.
pub fn client(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_client.py");
    let out = Command::new(super::test_venv().join("bin/python"))
        .arg(&script)
        .args(args)
        .output()
        .expect("run the TLS client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "tls_client {args:?}: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The same, started in the background (a load that runs until told to stop).
pub fn client_in_background(args: &[&str]) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_client.py");
    Command::new(super::test_venv().join("bin/python"))
        .arg(&script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the TLS client")
}

/// A background client's JSON, once it has finished.
pub fn finish(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("tls_client: {e}: {text}"))
}
