//! `--ciphers`: gunicorn passes an OpenSSL cipher list to Python's `ssl`;
//! rustls has no such language. A list of suite names is read here, in
//! OpenSSL's or IANA's spelling. As with OpenSSL, the list restricts the
//! TLS 1.2 suites, and the TLS 1.3 ones only if it names any of them.

use rustls::SupportedCipherSuite;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite as cs};

use super::Refused;

/// Every suite rustls serves, with its OpenSSL name.
const SUITES: &[(&str, SupportedCipherSuite)] = &[
    ("TLS_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
    ("TLS_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

fn is_tls13(suite: &SupportedCipherSuite) -> bool {
    matches!(suite, SupportedCipherSuite::Tls13(_))
}

/// The suite a name stands for: OpenSSL's name, or IANA's as rustls
/// spells it (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_...`).
fn lookup(name: &str) -> Option<SupportedCipherSuite> {
    SUITES.iter().find_map(|(openssl, suite)| {
        let iana = suite.suite().as_str().unwrap_or("");
        (name.eq_ignore_ascii_case(openssl) || name.eq_ignore_ascii_case(iana)).then_some(*suite)
    })
}

/// The crypto provider with the suites `ciphers` allows (all: None).
pub fn provider(ciphers: Option<&str>) -> Result<CryptoProvider, Refused> {
    let mut provider = aws_lc_rs::default_provider();
    let Some(list) = ciphers.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(provider);
    };
    let mut chosen = Vec::new();
    for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let Some(suite) = lookup(name) else {
            let known: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
            return Err(Refused::new(
                "ciphers",
                format!(
                    "`{name}` is not a cipher suite ferricorn serves; give a list of suite names separated by `:` from: {} (OpenSSL's selection rules such as HIGH or !aNULL are not read)",
                    known.join(":")
                ),
            ));
        };
        if !chosen.contains(&suite) {
            chosen.push(suite);
        }
    }
    if !chosen.iter().any(is_tls13) {
        chosen.extend(provider.cipher_suites.iter().filter(|s| is_tls13(s)));
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ciphers: &str) -> Vec<String> {
        provider(Some(ciphers))
            .unwrap()
            .cipher_suites
            .iter()
            .map(|s| s.suite().as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_tls12_list_keeps_every_tls13_suite_as_openssl_does() {
        let chosen = names("ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(chosen[0], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(chosen.len(), 4, "{chosen:?}");
        assert!(chosen.iter().filter(|n| n.starts_with("TLS13_")).count() == 3);
    }

    #[test]
    fn naming_a_tls13_suite_restricts_tls13_too() {
        assert_eq!(
            names("TLS_AES_256_GCM_SHA384:TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
    }

    #[test]
    fn an_openssl_rule_is_refused_naming_what_is_read() {
        let e = provider(Some("HIGH:!aNULL")).unwrap_err();
        assert_eq!(e.setting, "ciphers");
        assert!(e.message.contains("`HIGH`"), "{}", e.message);
        assert!(e.message.contains("ECDHE-RSA-AES128-GCM-SHA256"));
    }
}
