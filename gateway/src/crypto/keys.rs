//! ed25519 keys for signing packages: the private key in a PKCS#8 PEM file (what
//! `openssl genpkey -algorithm ed25519` writes too), public keys as `ed25519:<base64>`.

use std::path::Path;

use base64ct::{Base64, Encoding};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// The prefix of a public key in text form.
pub const PUBLIC_PREFIX: &str = "ed25519:";

/// A key that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not a PKCS#8 PEM ed25519 private key.
    #[error("{0}: not an ed25519 private key in PKCS#8 PEM (as `kiri keygen` or `openssl genpkey -algorithm ed25519` writes)")]
    NotAKey(String),
    /// A public key string that is not `ed25519:<base64 of 32 bytes>`.
    #[error(
        "{0:?}: not a public key; expected ed25519:<base64 of 32 bytes>, as `kiri keygen` prints"
    )]
    BadPublic(String),
}

/// A new key pair from the operating system's random source.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    SigningKey::from_bytes(&seed)
}

/// Writes `key` to `path` (PKCS#8 PEM, readable by the owner only), and its public key beside
/// it with the extension replaced: `.pub` (`ed25519:...`) and `.pub.pem`.
pub fn write(key: &SigningKey, path: &Path) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        cause: source,
    };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an ed25519 key always encodes");
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut f = options.open(path).map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
    }
    let public = format!("{}\n", public_text(&key.verifying_key()));
    std::fs::write(path.with_extension("pub"), public).map_err(io)?;
    // The same public key as PEM, the form `dashboard.jwt.keys` takes.
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("an ed25519 key always encodes");
    std::fs::write(path.with_extension("pub.pem"), pem).map_err(io)
}

/// Reads a private key written by [`write`] (or by OpenSSL).
pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        cause: source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::NotAKey(path.display().to_string()))
}

/// `ed25519:<base64>`.
pub fn public_text(key: &VerifyingKey) -> String {
    public_text_of(key.as_bytes())
}

/// `ed25519:<base64>` of raw key bytes (which may not even be a valid point).
pub fn public_text_of(bytes: &[u8; 32]) -> String {
    format!("{PUBLIC_PREFIX}{}", Base64::encode_string(bytes))
}

/// Parses `ed25519:<base64>`.
pub fn parse_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::BadPublic(text.to_string());
    let b64 = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
    let bytes: [u8; 32] = Base64::decode_vec(b64)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.key");
        let key = generate();
        write(&key, &path).unwrap();
        assert_eq!(read(&path).unwrap().to_bytes(), key.to_bytes());
        let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        assert_eq!(parse_public(&text).unwrap(), key.verifying_key());
        assert!(
            write(&key, &path).is_err(),
            "an existing key is never overwritten"
        );
        assert!(parse_public("ed25519:AAAA").is_err());
        assert!(parse_public("rsa:xyz").is_err());
    }
}
