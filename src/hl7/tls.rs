//! MLLP over TLS (`[hl7.tls]`): the listener's certificate and key, and, with `client_ca_file`,
//! mutual TLS, where a sender must present a certificate that chains to that CA. rustls on
//! aws-lc-rs (the crypto the rest of radsight uses), TLS 1.2 and 1.3 only.
//!
//! TLS authenticates the connection; the sender allowlist (`hl7.allowed_sources`,
//! `hl7.senders`) still applies to every message on it.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::configuration::Hl7Tls;

/// Builds the TLS acceptor from the configured PEM files.
pub fn acceptor(tls: &Hl7Tls) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading hl7.tls.cert_file {}", tls.cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "hl7.tls.cert_file {} holds no certificate", tls.cert_file.display());
    let key =
        PrivateKeyDer::from_pem_file(&tls.key_file).with_context(|| format!("reading hl7.tls.key_file {}", tls.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS protocol versions")?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading hl7.tls.client_ca_file {}", ca.display()))? {
                roots.add(cert.context("reading a client CA certificate")?).context("adding a client CA certificate")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).context("hl7.tls: the certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
