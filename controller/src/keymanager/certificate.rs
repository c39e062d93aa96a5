//! How Octavia reads a TLS listener's certificate from the Key Manager:
//! [`certificate`] resolves a certificate container reference (secrets
//! `certificate`, `private_key`, optional `intermediates` and
//! `private_key_passphrase`) or a secret reference holding a PKCS#12
//! bundle (without a pass phrase) into a PEM chain and an unencrypted PEM
//! key, checking that the certificates parse and, for RSA and EC keys that
//! carry their public key, that the key matches the leaf certificate.
//! Errors are Octavia's: 400 `Could not retrieve certificate: ['<ref>']`
//! for anything wrong with a container or a missing/invisible reference
//! (the precise reason is logged), Octavia's `UnreadablePKCS12` message
//! for a secret that is not a PKCS#12 bundle.

use der::pem::{self, LineEnding};
use strato_proto::l7::L7Certificate;
use thiserror::Error;
use x509_parser::public_key::PublicKey;

use crate::{error::ApiError, model::Secret, state::State};

/// Why a reference does not give a certificate (logged; rendered as
/// Octavia's messages by [`certificate`]).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertError {
    #[error("not a key manager secret or container reference")]
    BadReference,
    #[error("no such secret or container in the project")]
    NotFound,
    #[error("container type {0:?} is not 'certificate'")]
    NotCertificateContainer(String),
    #[error("the container has no {0:?} secret")]
    Missing(&'static str),
    #[error("the secret has no payload")]
    NoPayload,
    #[error("the stored payload does not open")]
    Sealed,
    #[error("the certificate is not a PEM X.509 certificate: {0}")]
    UnreadableCert(String),
    #[error("the private key is not readable: {0}")]
    UnreadableKey(String),
    #[error("the private key is encrypted and no private_key_passphrase was given")]
    NeedsPassphrase,
    #[error("the private key is encrypted in OpenSSL's legacy PEM format (Proc-Type: 4,ENCRYPTED), which is not supported: convert it to PKCS#8 (openssl pkcs8 -topk8) or store it unencrypted")]
    LegacyEncryptedKey,
    #[error("the private key and the certificate do not match")]
    MismatchedKey,
    #[error("{0}")]
    UnreadablePkcs12(String),
}

impl CertError {
    /// Octavia's rendering for `reference`.
    pub fn to_api(&self, reference: &str) -> ApiError {
        match self {
            CertError::UnreadablePkcs12(e) => ApiError::bad_request(format!(
                "The PKCS12 bundle is unreadable. Please check the PKCS12 bundle validity. In \
                 addition, make sure it does not require a pass phrase. Error: {e}"
            )),
            _ => ApiError::bad_request(format!("Could not retrieve certificate: ['{reference}']")),
        }
    }
}

/// The certificate and key `reference` names, for a load balancer of
/// `project_id` (only that project's secrets and containers are read,
/// whoever asks). Call it where a TERMINATED_HTTPS listener's
/// `default_tls_container_ref` / `sni_container_refs` are validated and
/// compiled; the state carries the key that opens the payloads.
pub fn certificate(
    state: &State,
    project_id: &str,
    reference: &str,
) -> Result<L7Certificate, ApiError> {
    resolve(state, project_id, reference).map_err(|e| {
        tracing::info!(reference, project = project_id, reason = %e, "certificate refused");
        e.to_api(reference)
    })
}

/// [`certificate`] with the precise reason of a refusal.
pub fn resolve(
    state: &State,
    project_id: &str,
    reference: &str,
) -> Result<L7Certificate, CertError> {
    let trimmed = reference.trim_end_matches('/');
    let mut parts = trimmed.rsplit('/');
    let id = parts.next().unwrap_or_default();
    let kind = parts.next().unwrap_or_default();
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(CertError::BadReference);
    }
    match kind {
        "containers" => from_container(state, project_id, reference, id),
        "secrets" => {
            let s = owned_secret(state, project_id, id)?;
            from_pkcs12(reference, &open(state, s)?)
        }
        _ => Err(CertError::BadReference),
    }
}

fn owned_secret<'s>(state: &'s State, project_id: &str, id: &str) -> Result<&'s Secret, CertError> {
    state
        .secrets
        .get(id)
        .filter(|s| {
            s.project_id == project_id
                && s.expiration_unix
                    .is_none_or(|e| e > crate::model::now_unix())
        })
        .ok_or(CertError::NotFound)
}

fn open(state: &State, s: &Secret) -> Result<Vec<u8>, CertError> {
    let sealed = s.sealed.as_ref().ok_or(CertError::NoPayload)?;
    let kek = state.secret_key.as_ref().ok_or(CertError::Sealed)?;
    kek.open(sealed, &super::aad(s))
        .map_err(|_| CertError::Sealed)
}

fn from_container(
    state: &State,
    project_id: &str,
    reference: &str,
    id: &str,
) -> Result<L7Certificate, CertError> {
    let c = state
        .secret_containers
        .get(id)
        .filter(|c| c.project_id == project_id)
        .ok_or(CertError::NotFound)?;
    if c.container_type != "certificate" {
        return Err(CertError::NotCertificateContainer(c.container_type.clone()));
    }
    let payload = |name: &'static str| -> Result<Option<Vec<u8>>, CertError> {
        match c
            .secret_refs
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
        {
            None => Ok(None),
            Some(r) => Ok(Some(open(
                state,
                owned_secret(state, project_id, &r.secret_id)?,
            )?)),
        }
    };
    let cert = payload("certificate")?.ok_or(CertError::Missing("certificate"))?;
    let key = payload("private_key")?.ok_or(CertError::Missing("private_key"))?;
    let intermediates = payload("intermediates")?;
    let passphrase = payload("private_key_passphrase")?;

    let leaf = pem_blocks(&cert, "CERTIFICATE").map_err(CertError::UnreadableCert)?;
    let leaf = leaf
        .into_iter()
        .next()
        .ok_or_else(|| CertError::UnreadableCert("no CERTIFICATE block".into()))?;
    let mut chain = vec![leaf];
    if let Some(i) = intermediates {
        chain.extend(pem_blocks(&i, "CERTIFICATE").map_err(CertError::UnreadableCert)?);
    }
    for der in &chain {
        parse_cert(der)?;
    }
    let (label, key_der) = read_key(&key, passphrase.as_deref())?;
    check_match(&chain[0], &label, &key_der)?;
    Ok(L7Certificate {
        reference: reference.to_owned(),
        chain_pem: chain_pem(&chain),
        key_pem: pem::encode_string(&label, LineEnding::LF, &key_der)
            .map_err(|e| CertError::UnreadableKey(e.to_string()))?,
    })
}

fn from_pkcs12(reference: &str, bundle: &[u8]) -> Result<L7Certificate, CertError> {
    let unreadable = || CertError::UnreadablePkcs12("Could not deserialize PKCS12 data".into());
    let ks =
        p12_keystore::KeyStore::from_pkcs12(bundle, "", p12_keystore::Pkcs12ImportPolicy::Strict)
            .map_err(|_| unreadable())?;
    let (_, kc) = ks.private_key_chain().ok_or_else(unreadable)?;
    let chain: Vec<Vec<u8>> = kc.certs().iter().map(|c| c.as_der().to_vec()).collect();
    if chain.is_empty() {
        return Err(unreadable());
    }
    for der in &chain {
        parse_cert(der).map_err(|_| unreadable())?;
    }
    let key_der = kc.key().as_der().to_vec();
    check_match(&chain[0], "PRIVATE KEY", &key_der).map_err(|_| unreadable())?;
    Ok(L7Certificate {
        reference: reference.to_owned(),
        chain_pem: chain_pem(&chain),
        key_pem: pem::encode_string("PRIVATE KEY", LineEnding::LF, &key_der)
            .map_err(|_| unreadable())?,
    })
}

fn chain_pem(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode_string("CERTIFICATE", LineEnding::LF, der).expect("PEM of DER"))
        .collect()
}

/// The blocks of PEM `text` with `label` (other blocks are ignored, as
/// OpenSSL does); an error if a block does not decode or none is there.
fn pem_blocks(text: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not PEM text".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end_label = block[11..].find("-----").ok_or("unterminated PEM header")?;
        let this = &block[11..11 + end_label];
        let end_marker = format!("-----END {this}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| format!("no {end_marker}"))?
            + end_marker.len();
        if this == label {
            let (l, der) = pem::decode_vec(&block.as_bytes()[..end]).map_err(|e| e.to_string())?;
            debug_assert_eq!(l, label);
            out.push(der);
        }
        rest = &block[end..];
    }
    if out.is_empty() {
        return Err(format!("no {label} block"));
    }
    Ok(out)
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((&[], c)) => Ok(c),
        Ok(_) => Err(CertError::UnreadableCert("trailing data".into())),
        Err(e) => Err(CertError::UnreadableCert(e.to_string())),
    }
}

/// The key's PEM label and DER: PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED
/// PRIVATE KEY` opened with `passphrase`), PKCS#1 (`RSA PRIVATE KEY`) or
/// SEC1 (`EC PRIVATE KEY`).
fn read_key(pem_text: &[u8], passphrase: Option<&[u8]>) -> Result<(String, Vec<u8>), CertError> {
    let text = std::str::from_utf8(pem_text)
        .map_err(|_| CertError::UnreadableKey("not PEM text".into()))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(CertError::LegacyEncryptedKey);
    }
    for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
        if let Ok(mut ders) = pem_blocks(pem_text, label) {
            return Ok((label.to_owned(), ders.swap_remove(0)));
        }
    }
    let der = pem_blocks(pem_text, "ENCRYPTED PRIVATE KEY")
        .map_err(|_| CertError::UnreadableKey("no private key PEM block".into()))?
        .swap_remove(0);
    let passphrase = passphrase.ok_or(CertError::NeedsPassphrase)?;
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| CertError::UnreadableKey(e.to_string()))?;
    let doc = info
        .decrypt(trim_ascii(passphrase))
        .map_err(|e| CertError::UnreadableKey(format!("cannot decrypt it: {e}")))?;
    Ok(("PRIVATE KEY".to_owned(), doc.as_bytes().to_vec()))
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Checks the key belongs to the leaf certificate where the key says what
/// its public half is (RSA: the modulus; EC: the public point when
/// present); other keys are accepted as they are.
fn check_match(leaf_der: &[u8], label: &str, key_der: &[u8]) -> Result<(), CertError> {
    let leaf = parse_cert(leaf_der)?;
    let public = leaf
        .public_key()
        .parsed()
        .map_err(|e| CertError::UnreadableCert(e.to_string()))?;
    let unreadable = |e: &dyn std::fmt::Display| CertError::UnreadableKey(e.to_string());
    // (RSA modulus, EC public point) of the key.
    let (modulus, point): (Option<Vec<u8>>, Option<Vec<u8>>) = match label {
        "RSA PRIVATE KEY" => {
            let k = pkcs1::RsaPrivateKeyRef::try_from(key_der).map_err(|e| unreadable(&e))?;
            (Some(k.modulus.as_bytes().to_vec()), None)
        }
        "EC PRIVATE KEY" => {
            let k = sec1::EcPrivateKey::try_from(key_der).map_err(|e| unreadable(&e))?;
            (None, k.public_key.map(<[u8]>::to_vec))
        }
        _ => {
            let info = pkcs8::PrivateKeyInfoRef::try_from(key_der).map_err(|e| unreadable(&e))?;
            let inner = info.private_key.as_bytes();
            match info.algorithm.oid.to_string().as_str() {
                "1.2.840.113549.1.1.1" => {
                    let k = pkcs1::RsaPrivateKeyRef::try_from(inner).map_err(|e| unreadable(&e))?;
                    (Some(k.modulus.as_bytes().to_vec()), None)
                }
                "1.2.840.10045.2.1" => {
                    let k = sec1::EcPrivateKey::try_from(inner).map_err(|e| unreadable(&e))?;
                    let embedded = k.public_key.map(<[u8]>::to_vec);
                    let outer = info
                        .public_key
                        .and_then(|b| b.as_bytes().map(<[u8]>::to_vec));
                    (None, embedded.or(outer))
                }
                _ => (None, None),
            }
        }
    };
    let ok = match (&public, modulus, point) {
        (PublicKey::RSA(rsa), Some(m), _) => strip_zeros(rsa.modulus) == strip_zeros(&m),
        (PublicKey::EC(ec), None, Some(p)) => ec.data() == p.as_slice(),
        (_, None, None) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CertError::MismatchedKey)
    }
}
