//! HTTPS on subserve's own sockets, for sites without a reverse proxy in front: a PEM
//! certificate chain and key (rustls), read at start-up and again on every [`Tls::reload`]
//! (SIGHUP), so a renewed certificate is taken without dropping a connection.
//!
//! The key file is a secret: it is refused when its group or others may read it, like a
//! signing key, and its contents are never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind wanted.
    #[error("cannot read {what} from {}: {reason}", path.display())]
    Read {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong (never the file's contents).
        reason: String,
    },
    /// The key file can be read by its group or others.
    #[error("{} can be read by others (mode {mode:o}): run chmod 600 {}", path.display(), path.display())]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the pair (a key that does not match the certificate, an unsupported key).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS configuration in force, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl Tls {
    /// Loads the certificate chain at `cert` and the private key at `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), current: Arc::new(RwLock::new(Arc::new(config))) })
    }

    /// Reads the files again; on success new handshakes use them, on failure the old ones
    /// stay in force and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in force now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let read = |what: &'static str, path: &Path, reason: String| TlsError::Read { what, path: path.to_owned(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read("certificate chain", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read("certificate chain", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read("certificate chain", cert, "no CERTIFICATE in it".into()));
    }
    check_private(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read("private key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Refuses a key file its group or others can access.
fn check_private(key: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(key).map_err(|e| TlsError::Read {
        what: "private key",
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::InsecurePermissions { path: key.to_owned(), mode });
    }
    Ok(())
}
