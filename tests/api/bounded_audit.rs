//! Strangers cannot grow the permanent audit log at will: text an unauthenticated sender
//! chooses (a token's claimed `iss`, an HL7 sender) is kept to 256 bytes plus the SHA-256 of
//! the whole, and an ACK never echoes more than a field's length.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{Backend, spawn_app};
use crate::hl7::{MllpClient, omi};

async fn a_huge_claimed_issuer_is_audited_cut_with_its_hash(backend: Backend) {
    let app = spawn_app(backend).await;
    let iss = format!("https://{}.example.org", "a".repeat(60_000));
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES384", "typ": "JWT", "kid": "k"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"iss": iss, "aud": "x", "exp": 4_000_000_000u64, "jti": "j"}).to_string());
    let token = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([0u8; 96]));
    let reply = app.discovery(Some(&token)).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (401, ""));
    let entry = app.audit().await.pop().unwrap();
    assert_eq!(entry.action, "auth.reject");
    assert!(entry.detail.len() < 1_000, "the entry stays small: {} bytes", entry.detail.len());
    let detail: Value = serde_json::from_str(&entry.detail).unwrap();
    let claimed = detail["claimed_iss"].as_str().unwrap();
    let hash = hex::encode(sha2::Sha256::digest(iss.as_bytes()));
    assert!(claimed.starts_with("https://aaaa") && claimed.ends_with(&format!("sha256:{hash}")), "{claimed}");
}

async fn a_huge_hl7_sender_is_neither_stored_whole_nor_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let sender = "S".repeat(500_000);
    let message = omi("BIG1", "MRN1", "1.2.826.0.7.1").replacen("MSH|^~\\&|", &format!("MSH|^~\\&|{sender}"), 1);
    assert!(message.len() > 500_000);
    let mut client = MllpClient::connect(&app).await;
    let ack = client.send(&message).await;
    assert!(ack.0.len() < 2_000, "the ACK echoes a bounded sender: {} bytes", ack.0.len());
    let entry = app.audit().await.into_iter().rev().find(|e| e.action == "hl7.message").unwrap();
    let size = entry.detail.len() + entry.actor_iss.as_deref().map_or(0, str::len);
    assert!(size < 2_000, "the entry stays small: {size} bytes");
}

backend_tests!(a_huge_claimed_issuer_is_audited_cut_with_its_hash, a_huge_hl7_sender_is_neither_stored_whole_nor_echoed,);
