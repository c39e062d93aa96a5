//! The Key Manager's key-encryption key (KEK) and the sealing of secret
//! payloads with it: AES-256-GCM, a random 96-bit nonce per seal, the
//! secret's id and project as associated data.
//!
//! The KEK lives in a file outside the database (default
//! `<state dir>/secret.key`, mode 0600, 32 random bytes, created on first
//! start) and in memory only inside [`Kek`] (`State::secret_key`); it is
//! never stored, logged or rendered. A database copied without its key
//! file reveals no payload. This module never sees HTTP nor the state.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm,
};
use base64ct::{Base64, Encoding as _};
use thiserror::Error;

use crate::model::Sealed;

/// Bytes of a key-encryption key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The key-encryption key. Its `Debug` shows no key material.
pub struct Kek {
    cipher: Aes256Gcm,
    /// Where it was read from (for messages).
    pub path: PathBuf,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum KekError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} holds {len} bytes; a key-encryption key is exactly {KEY_LEN} bytes")]
    Length { path: PathBuf, len: usize },
    #[error("key file {path} is readable by others (mode {mode:o}); make it 0600")]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is missing but the database holds {secrets} secret payload(s) sealed \
         with a key-encryption key: restore the key file (or point --secret-key at it); \
         refusing to start with a new key that cannot open them"
    )]
    Missing { path: PathBuf, secrets: usize },
    #[error(
        "key file {path} does not open the stored secret {secret}: it is not the \
         key-encryption key these secrets were sealed with"
    )]
    WrongKey { path: PathBuf, secret: String },
}

/// A sealed payload that does not open (wrong key, or altered).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the secret's payload cannot be opened with this key-encryption key")]
pub struct OpenError;

impl Kek {
    /// A key from its bytes (tests, and [`load_or_create`]).
    pub fn from_bytes(key: &[u8; KEY_LEN], path: PathBuf) -> Kek {
        Kek {
            cipher: Aes256Gcm::new_from_slice(key).expect("32-byte key"),
            path,
        }
    }

    /// A fresh random key that lives only in memory (unit tests).
    pub fn ephemeral() -> Kek {
        Kek::from_bytes(&random_key(), PathBuf::from("(in memory)"))
    }

    /// Seals `plaintext`, bound to `aad` (the secret's id and project).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let ciphertext = self
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer");
        Sealed {
            nonce: Base64::encode_string(&nonce),
            ciphertext: Base64::encode_string(&ciphertext),
        }
    }

    /// Opens a payload sealed with this key for `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &str) -> Result<Vec<u8>, OpenError> {
        let nonce = Base64::decode_vec(&sealed.nonce).map_err(|_| OpenError)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        let ciphertext = Base64::decode_vec(&sealed.ciphertext).map_err(|_| OpenError)?;
        self.cipher
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: &ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError)
    }
}

fn random_key() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    getrandom::fill(&mut k).expect("the OS random source");
    k
}

/// The default key file: `secret.key` beside the database.
pub fn default_path(db: &Path) -> PathBuf {
    db.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("secret.key")
}

/// Reads the key at `path`, or creates it (0600, 32 random bytes) when it
/// does not exist and no sealed payload exists (`sealed` are the stored
/// payloads, as `(secret id, aad, sealed)`). The key must open the first
/// of them: a wrong or missing key with existing secrets is refused.
pub fn load_or_create<'a>(
    path: &Path,
    sealed: impl IntoIterator<Item = (&'a str, String, &'a Sealed)>,
) -> Result<Kek, KekError> {
    let io = |source| KekError::Io {
        path: path.to_owned(),
        source,
    };
    let mut sealed = sealed.into_iter().peekable();
    let kek = match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KekError::Mode {
                    path: path.to_owned(),
                    mode,
                });
            }
            let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KekError::Length {
                path: path.to_owned(),
                len: bytes.len(),
            })?;
            Kek::from_bytes(&key, path.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if sealed.peek().is_some() {
                return Err(KekError::Missing {
                    path: path.to_owned(),
                    secrets: sealed.count(),
                });
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let key = random_key();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(&key).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "key-encryption key created");
            return Ok(Kek::from_bytes(&key, path.to_owned()));
        }
        Err(e) => return Err(io(e)),
    };
    if let Some((id, aad, s)) = sealed.next() {
        if kek.open(s, &aad).is_err() {
            return Err(KekError::WrongKey {
                path: path.to_owned(),
                secret: id.to_owned(),
            });
        }
    }
    Ok(kek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let k = Kek::ephemeral();
        let s = k.seal(b"hello", "id1:p1");
        assert_eq!(k.open(&s, "id1:p1").expect("opens"), b"hello");
        assert_eq!(k.open(&s, "id2:p1"), Err(OpenError), "bound to its row");
        assert_eq!(Kek::ephemeral().open(&s, "id1:p1"), Err(OpenError));
        let s2 = k.seal(b"hello", "id1:p1");
        assert_ne!(s.nonce, s2.nonce, "a nonce per seal");
        assert!(!s.ciphertext.contains("hello"));
    }

    #[test]
    fn key_file_created_reused_and_checked() {
        let dir = std::env::temp_dir().join(format!("strato-kek-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("secret.key");
        let k = load_or_create(&path, []).expect("created");
        let meta = std::fs::metadata(&path).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let s = k.seal(b"x", "a");
        let again = load_or_create(&path, [("s1", "a".to_owned(), &s)]).expect("reused");
        assert_eq!(again.open(&s, "a").expect("same key"), b"x");

        // Another key: refused, naming the secret.
        std::fs::write(&path, [7u8; KEY_LEN]).expect("overwrite");
        let e = load_or_create(&path, [("s1", "a".to_owned(), &s)]).expect_err("wrong key");
        assert!(
            matches!(e, KekError::WrongKey { ref secret, .. } if secret == "s1"),
            "{e}"
        );
        // Missing with secrets: refused, nothing created.
        std::fs::remove_file(&path).expect("rm");
        let e = load_or_create(&path, [("s1", "a".to_owned(), &s)]).expect_err("missing");
        assert!(e.to_string().contains("restore the key file"), "{e}");
        assert!(!path.exists());
        // Bad length, open mode.
        std::fs::write(&path, b"short").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load_or_create(&path, []),
            Err(KekError::Length { len: 5, .. })
        ));
        std::fs::write(&path, [1u8; KEY_LEN]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            load_or_create(&path, []),
            Err(KekError::Mode { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
