//! HTTPS: a certificate chain and its key (PEM files) loaded into a rustls
//! server config, with errors that name the file and what is wrong with it.
//! A server that faces the internet must not send its viewer tokens in the
//! clear (`--tls-cert` / `--tls-key`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `--tls-cert PEM --tls-key PEM`: speak HTTPS on `--listen` (both or neither).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Speak HTTPS: the server certificate (PEM), followed by its chain.
    #[arg(long = "tls-cert", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// `None` without `--tls-cert`: plain HTTP.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Tls::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }
}

/// What the listener needs to speak TLS.
#[derive(Clone)]
pub struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("--tls-key {path}: {why}")]
    Key { path: String, why: String },
    #[error("--tls-cert and --tls-key do not go together: {0}")]
    Mismatch(String),
}

impl Tls {
    /// Load `cert` (the server certificate first, then its chain) and `key`
    /// (PKCS#8, PKCS#1 or SEC1), both PEM.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_err = |why: String| TlsError::Cert {
            path: cert.display().to_string(),
            why,
        };
        let key_err = |why: String| TlsError::Key {
            path: key.display().to_string(),
            why,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| cert_err(pem_why(e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(pem_why(e)))?;
        if chain.is_empty() {
            return Err(cert_err(
                "no CERTIFICATE in it (a PEM file with the server certificate first, then its chain)".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(pem_why(e)))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Mismatch(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

fn pem_why(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => "no PEM item of the right kind in it".into(),
        other => format!("not a PEM file this server can use: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_wrong_file_is_named_with_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("pixelpass-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = Tls::load(&dir.join("none.pem"), &junk)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tls-cert ") && e.contains("none.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = Tls::load(&junk, &junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
