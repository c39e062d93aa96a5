//! TLS of a TERMINATED_HTTPS listener: certificates and keys from PEM,
//! the certificate a client's SNI chooses, the rustls server
//! configuration (versions, ALPN). Never touches sockets.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use strato_proto::l7::{L7Certificate, L7Tls};

use crate::error::{invalid, ConfigError};

/// A certificate with its key and the names it is served for (lower
/// case; `*.example.com` wildcards kept as written).
#[derive(Debug)]
pub struct NamedCert {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// Loads one certificate: chain, key, names.
pub fn load_cert(c: &L7Certificate, field: &str) -> Result<NamedCert, ConfigError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("{field}.chain_pem"), format!("bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(format!("{field}.chain_pem"), "no certificate"));
    };
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
        .map_err(|e| invalid(format!("{field}.key_pem"), format!("bad PEM key: {e}")))?;
    let signer = ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(format!("{field}.key_pem"), format!("unusable key: {e}")))?;
    let names = cert_names(leaf.as_ref()).map_err(|e| {
        invalid(
            format!("{field}.chain_pem"),
            format!("bad certificate: {e}"),
        )
    })?;
    let key = CertifiedKey::new(chain, signer);
    if let Err(e) = key.keys_match() {
        if !matches!(
            e,
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
        ) {
            return Err(invalid(
                format!("{field}.key_pem"),
                format!("does not match the certificate: {e}"),
            ));
        }
    }
    Ok(NamedCert {
        names,
        key: Arc::new(key),
    })
}

/// A certificate's DNS names: its subject alternative names, else its
/// common names; lower case.
pub fn cert_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// Whether a certificate name covers a server name (both lower case):
/// equal, or `*.rest` and the server name is one label followed by `.rest`.
pub fn name_matches(pattern: &str, server: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("*.") {
        match server.split_once('.') {
            Some((label, tail)) => !label.is_empty() && tail == rest,
            None => false,
        }
    } else {
        pattern == server
    }
}

/// Chooses the certificate by SNI: an exact name first, then a wildcard,
/// in configuration order; the default certificate otherwise.
#[derive(Debug)]
pub struct SniResolver {
    pub default: Arc<CertifiedKey>,
    pub sni: Vec<NamedCert>,
}

impl SniResolver {
    pub fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let exact = self
                .sni
                .iter()
                .find(|c| c.names.iter().any(|n| !n.starts_with("*.") && *n == name));
            let wild = || {
                self.sni
                    .iter()
                    .find(|c| c.names.iter().any(|n| name_matches(n, &name)))
            };
            if let Some(c) = exact.or_else(wild) {
                return c.key.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()))
    }
}

/// The rustls configuration of a listener.
pub fn server_config(t: &L7Tls, field: &str) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let default = load_cert(
        &t.default_certificate,
        &format!("{field}.default_certificate"),
    )?;
    let sni = t
        .sni_certificates
        .iter()
        .enumerate()
        .map(|(i, c)| load_cert(c, &format!("{field}.sni_certificates[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut versions = Vec::new();
    for (i, v) in t.versions.iter().enumerate() {
        versions.push(match v.as_str() {
            "TLSv1.2" => &rustls::version::TLS12,
            "TLSv1.3" => &rustls::version::TLS13,
            other => {
                return Err(invalid(
                    format!("{field}.versions[{i}]"),
                    format!("{other:?} (TLSv1.2 or TLSv1.3)"),
                ))
            }
        });
    }
    if versions.is_empty() {
        versions = vec![&rustls::version::TLS13, &rustls::version::TLS12];
    }
    let mut alpn = Vec::new();
    for (i, p) in t.alpn_protocols.iter().enumerate() {
        match p.as_str() {
            "h2" | "http/1.1" | "http/1.0" => alpn.push(p.as_bytes().to_vec()),
            other => {
                return Err(invalid(
                    format!("{field}.alpn_protocols[{i}]"),
                    format!("{other:?} (h2, http/1.1 or http/1.0)"),
                ))
            }
        }
    }
    if alpn.is_empty() {
        alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    // ring, deliberately (aws-lc-rs needs cmake and builds slowly); rustls
    // deprecates it only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(format!("{field}.versions"), e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            default: default.key,
            sni,
        }));
    cfg.alpn_protocols = alpn;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.a.test", "www.a.test"));
        assert!(!name_matches("*.a.test", "a.test"));
        assert!(!name_matches("*.a.test", "x.www.a.test"));
        assert!(name_matches("a.test", "a.test"));
        assert!(!name_matches("a.test", "b.test"));
    }
}
