//! The wire form of a deployment: a signed package (or command) as published on a deploy
//! topic.

use ciborium::Value;
use ed25519_dalek::{Signer, SigningKey};

use crate::codec::{encode_value, text, CodecError, Map};

/// A signed function package or command, as published on a deploy topic: a CBOR map
/// `{"v": 1, "manifest": bytes, "key": bytes(32), "signature": bytes(64), "module": bytes}`.
/// The signature (ed25519, by `key`) covers the manifest bytes exactly; the manifest holds the
/// module's SHA-256, so the module is covered through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The manifest, CBOR, exactly as signed.
    pub manifest: Vec<u8>,
    /// The signer's ed25519 public key.
    pub key: [u8; 32],
    /// The ed25519 signature of `manifest`.
    pub signature: [u8; 64],
    /// The WebAssembly module (empty for commands).
    pub module: Vec<u8>,
}

/// The package format version.
pub const PACKAGE_VERSION: u64 = 1;

impl Package {
    /// Signs `manifest` (CBOR bytes) with `key` and wraps it with `module` into a package.
    pub fn sign(key: &SigningKey, manifest: Vec<u8>, module: Vec<u8>) -> Package {
        let signature = key.sign(&manifest).to_bytes();
        Package {
            manifest,
            key: key.verifying_key().to_bytes(),
            signature,
            module,
        }
    }

    /// Encodes the package.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(&Value::Map(vec![
            (text("v"), Value::from(PACKAGE_VERSION)),
            (text("manifest"), Value::Bytes(self.manifest.clone())),
            (text("key"), Value::Bytes(self.key.to_vec())),
            (text("signature"), Value::Bytes(self.signature.to_vec())),
            (text("module"), Value::Bytes(self.module.clone())),
        ]))
    }

    /// Decodes a package, strictly: exactly these keys, the right lengths, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Package, CodecError> {
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest)
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CodecError::Trailing(rest.len()));
        }
        let Value::Map(entries) = value else {
            return Err(CodecError::Shape("package is not a map"));
        };
        if entries.len() != 5 {
            return Err(CodecError::Shape(
                "package must have exactly v, manifest, key, signature, module",
            ));
        }
        let m = Map(entries);
        if m.uint("v") != Some(PACKAGE_VERSION) {
            return Err(CodecError::Shape("unknown package version"));
        }
        Ok(Package {
            manifest: m.bytes("manifest")?,
            key: m
                .bytes("key")?
                .try_into()
                .map_err(|_| CodecError::Shape("key"))?,
            signature: m
                .bytes("signature")?
                .try_into()
                .map_err(|_| CodecError::Shape("signature"))?,
            module: m.bytes("module")?,
        })
    }
}
