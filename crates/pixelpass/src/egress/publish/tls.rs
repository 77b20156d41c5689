//! TLS for `https://` WHIP endpoints: rustls (aws-lc-rs), trusting the
//! system's CA store (`rustls-native-certs`: Debian's ca-certificates, and
//! whatever CA an administrator added there or names in `SSL_CERT_FILE`)
//! plus `--publish-ca PEM`, a private CA a self-hosted relay is signed by.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio_rustls::TlsConnector;

/// The connector for `https://` endpoints.
pub fn connector(ca: Option<&Path>) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(e) = native.errors.first() {
        tracing::debug!("some system CA certificates could not be read: {e}");
    }
    if let Some(path) = ca {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("--publish-ca {shown}: cannot read it: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--publish-ca {shown}: not a PEM certificate: {e}"))?;
        if certs.is_empty() {
            anyhow::bail!(
                "--publish-ca {shown}: no CERTIFICATE in it (give the CA certificate, PEM)"
            );
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                anyhow::anyhow!("--publish-ca {shown}: not a usable CA certificate: {e}")
            })?;
        }
    } else if added == 0 {
        anyhow::bail!(
            "no system CA certificates found for https:// --publish URLs (apt-get install ca-certificates, or give --publish-ca PEM)"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS client setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
