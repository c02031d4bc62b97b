//! MLLP over TLS (`[hl7.tls]`): the listener's certificate and key, and, with `client_ca_file`,
//! mutual TLS, where a sender must present a certificate that chains to that CA. And the other
//! way ([`connector`]): radsight sending to a RIS over TLS (`[outputs.ris.tls]`), checking the
//! RIS's certificate against a configured CA and presenting its own when asked. rustls on
//! aws-lc-rs (the crypto the rest of radsight uses), TLS 1.2 and 1.3 only.
//!
//! TLS authenticates the connection; the sender allowlist (`hl7.allowed_sources`,
//! `hl7.senders`) still applies to every message on it.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::configuration::{Hl7Tls, RisTls};

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

/// Builds the TLS connector for a RIS destination from its PEM files.
pub fn connector(tls: &RisTls) -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file).with_context(|| format!("reading tls.ca_file {}", tls.ca_file.display()))? {
        roots.add(cert.context("reading a CA certificate")?).context("adding a CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "tls.ca_file {} holds no certificate", tls.ca_file.display());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading tls.cert_file {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading tls.key_file {}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("tls: the client certificate and key do not match")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}
