//! MLLP over TLS with client certificates: a sender whose certificate chains to the configured
//! CA is acknowledged; one without a certificate, or with one from another CA, or speaking
//! plain MLLP, gets nothing through. The keys and certificates are made by `openssl` per test.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use radsight::configuration::Hl7Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, spawn_app_with};
use crate::hl7::omi;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A leaf certificate `{leaf}.pem`/`.key` for `usage` (serverAuth, clientAuth), signed by `ca`.
pub(crate) fn issue(dir: &Path, ca: &str, leaf: &str, usage: &str) {
    std::fs::write(
        dir.join(format!("{leaf}.ext")),
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1\n"),
    )
    .unwrap();
    let (key, csr, pem, ext) = (format!("{leaf}.key"), format!("{leaf}.csr"), format!("{leaf}.pem"), format!("{leaf}.ext"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={leaf}"),
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &["x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-CAcreateserial", "-days", "1", "-out", &pem, "-extfile", &ext],
    );
}

/// A self-signed CA `{name}.pem`/`.key`.
pub(crate) fn ca(dir: &Path, name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// Sends one message over TLS (with the client certificate `client`, if any); the ACK text, or
/// `None` when the handshake or the exchange failed.
async fn send_tls(port: u16, dir: &Path, client: Option<&str>, message: &str) -> Option<String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem"))).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut tls = connector.connect(ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into()), tcp).await.ok()?;
    let mut framed = vec![0x0b];
    framed.extend_from_slice(message.as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    tls.write_all(&framed).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(&[0x1c, 0x0d]) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got[1..got.len() - 2]).into_owned())
}

async fn mllp_over_tls_takes_only_senders_with_a_certificate_from_the_configured_ca(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    ca(d, "other-ca");
    issue(d, "ca", "server", "serverAuth");
    issue(d, "ca", "ris", "clientAuth");
    issue(d, "other-ca", "stranger", "clientAuth");
    let tls = Hl7Tls { cert_file: d.join("server.pem"), key_file: d.join("server.key"), client_ca_file: Some(d.join("ca.pem")) };
    let app = spawn_app_with(backend, |s| s.hl7.tls = Some(tls)).await;

    let ack = send_tls(app.hl7_port, d, Some("ris"), &omi("T1", "MRN1", "1.2.826.0.11.1")).await.expect("the RIS is answered");
    assert!(ack.contains("MSA|AA|T1"), "{ack}");
    assert!(send_tls(app.hl7_port, d, None, &omi("T2", "MRN1", "1.2.826.0.11.2")).await.is_none(), "no client certificate");
    assert!(send_tls(app.hl7_port, d, Some("stranger"), &omi("T3", "MRN1", "1.2.826.0.11.3")).await.is_none(), "another CA");

    // Plain MLLP on the TLS port: no ACK comes back.
    let mut plain = TcpStream::connect(("127.0.0.1", app.hl7_port)).await.unwrap();
    let mut framed = vec![0x0b];
    framed.extend_from_slice(omi("T4", "MRN1", "1.2.826.0.11.4").as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    plain.write_all(&framed).await.unwrap();
    let mut buf = [0u8; 1024];
    let answer =
        tokio::time::timeout(std::time::Duration::from_secs(10), plain.read(&mut buf)).await.expect("the listener answers or closes");
    assert!(!String::from_utf8_lossy(&buf[..answer.unwrap_or(0)]).contains("MSA|"), "plain MLLP got an ACK");

    let jobs = app.jobs().await;
    assert_eq!(jobs.len(), 1, "only the certified sender's study is queued");
    assert_eq!(jobs[0].study_uid, "1.2.826.0.11.1");
}

backend_tests!(mllp_over_tls_takes_only_senders_with_a_certificate_from_the_configured_ca,);
