//! rustls configurations (ring provider). The uplink's client: server verification against
//! `cloud.ca_file` or the system's roots, an optional client certificate for mutual TLS,
//! optional ALPN; the server name checked (and sent as SNI) is the host of `cloud.url`. The
//! HTTP API's server: a certificate chain and its key. Errors name the configuration key of
//! the file at fault.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A TLS setting that cannot be used; found at start, before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} = {path}: {problem}")]
    File {
        /// The config key.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// No trusted roots at all.
    #[error(
        "no trusted CA certificates: the system has none that rustls can read; set cloud.ca_file"
    )]
    NoRoots,
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(key: &'static str, path: &Path, problem: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            "no PEM CERTIFICATE block in the file",
        ));
    }
    Ok(certs)
}

/// The files and protocols of a TLS client (the `cloud.*` keys of the same names).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFiles<'a> {
    /// PEM CA certificates the server's chain must lead to; `None`: the system's roots.
    pub ca_file: Option<&'a Path>,
    /// PEM client certificate chain, for mutual TLS.
    pub client_cert: Option<&'a Path>,
    /// PEM private key of the client certificate.
    pub client_key: Option<&'a Path>,
    /// ALPN protocol names to offer.
    pub alpn: &'a [String],
}

/// The rustls client configuration of the uplink.
pub fn client_config(cloud: ClientFiles<'_>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match cloud.ca_file {
        Some(path) => {
            let (added, _ignored) =
                roots.add_parsable_certificates(certificates("cloud.ca_file", path)?);
            if added == 0 {
                return Err(file_error(
                    "cloud.ca_file",
                    path,
                    "no usable CA certificate",
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading the system's CA certificates");
            }
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsSetupError::NoRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (cloud.client_cert, cloud.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("cloud.client_cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error("cloud.client_key", key, e))?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = cloud.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// The rustls server configuration of the dashboard: a certificate chain and its key (PEM).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = certificates("dashboard.tls_cert", cert)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("dashboard.tls_key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a CA certificate and a client certificate with its key into `dir`.
    fn files(dir: &Path) -> [std::path::PathBuf; 3] {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["gw.test".to_string()]).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client.cert.pem()).unwrap();
        std::fs::write(dir.join("client.key"), client.signing_key.serialize_pem()).unwrap();
        ["ca.pem", "client.pem", "client.key"].map(|f| dir.join(f))
    }

    fn cloud<'a>(files: &'a [std::path::PathBuf; 3], alpn: &'a [String]) -> ClientFiles<'a> {
        ClientFiles {
            ca_file: Some(&files[0]),
            client_cert: Some(&files[1]),
            client_key: Some(&files[2]),
            alpn,
        }
    }

    #[test]
    fn a_ca_file_a_client_certificate_and_alpn_make_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let alpn = ["x-amzn-mqtt-ca".to_string()];
        let config = client_config(cloud(&files, &alpn)).unwrap();
        assert_eq!(config.alpn_protocols, [b"x-amzn-mqtt-ca".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn unusable_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let (missing, empty) = (dir.path().join("missing.pem"), dir.path().join("empty.pem"));
        let mut c = cloud(&files, &[]);
        c.ca_file = Some(&missing);
        let e = client_config(c).unwrap_err().to_string();
        assert!(
            e.starts_with("cloud.ca_file = ") && e.contains("missing.pem"),
            "{e}"
        );

        let mut c = cloud(&files, &[]);
        std::fs::write(&empty, "not a certificate\n").unwrap();
        c.ca_file = Some(&empty);
        let e = client_config(c).unwrap_err().to_string();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");

        let mut c = cloud(&files, &[]);
        c.client_key = Some(&empty);
        let e = client_config(c).unwrap_err().to_string();
        assert!(e.starts_with("cloud.client_key = "), "{e}");
    }
}
