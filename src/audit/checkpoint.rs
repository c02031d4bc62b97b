//! Signed tree heads in the C2SP formats used by transparency logs: a `tlog-checkpoint` body
//! (origin, tree size, base64 root hash) wrapped in a `signed-note` with an Ed25519 signature.
//!
//! ```text
//! radsight.example/audit
//! 1024
//! 3Gd0yL1ZnxRsPeK+9yJ7Z3f0f4yqN0jWZC9xQ8wG6yE=
//! time 2026-11-29T20:30:00Z
//!
//! — radsight.example/audit AbCdEf...base64(key id ‖ signature)...
//! ```
//!
//! The fourth line is a checkpoint extension line (allowed by tlog-checkpoint) carrying the
//! signing time, so the signed tree head covers size, root and time.
//!
//! The verifier key is shared in the Go `note` package's text form,
//! `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`, so that auditors and witnesses can check
//! checkpoints with standard tooling and without radsight.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::merkle::Hash;

const ED25519_TYPE: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("the checkpoint key could not be read: {0}")]
    Key(String),
    #[error("the verifier key is not <name>+<hex id>+<base64 key>")]
    BadVerifierKey,
    #[error("the note is malformed: {0}")]
    Malformed(&'static str),
    #[error("the note carries no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("the checkpoint is for origin {found}, expected {expected}")]
    WrongOrigin { expected: String, found: String },
}

/// A verified (or about to be signed) tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// When it was signed (RFC 3339, UTC), from the `time` extension line.
    pub time: Option<String>,
}

impl Checkpoint {
    /// The note text: exactly what is signed.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        if let Some(t) = &self.time {
            body.push_str(&format!("time {t}\n"));
        }
        body
    }
}

fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0A, ED25519_TYPE]);
    h.update(public);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The log's signing key.
pub struct CheckpointSigner {
    name: String,
    key: Ed25519KeyPair,
    /// SHA-256 of the private key, the root of [`CheckpointSigner::derive_secret`].
    seed: [u8; 32],
}

impl CheckpointSigner {
    /// Reads the PKCS#8 PEM key at `path`, creating one (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path, name: &str) -> Result<CheckpointSigner, CheckpointError> {
        if !path.exists() {
            let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| CheckpointError::Key("generation failed".into()))?;
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", B64.encode(der.as_ref()));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| CheckpointError::Key(e.to_string()))?;
            }
            write_secret(path, &pem).map_err(|e| CheckpointError::Key(e.to_string()))?;
        }
        CheckpointSigner::load(path, name)
    }

    /// Reads an existing key; never creates one.
    pub fn load(path: &Path, name: &str) -> Result<CheckpointSigner, CheckpointError> {
        let pem = std::fs::read_to_string(path).map_err(|e| CheckpointError::Key(format!("{}: {e}", path.display())))?;
        CheckpointSigner::from_pem(&pem, name)
    }

    pub fn from_pem(pem: &str, name: &str) -> Result<CheckpointSigner, CheckpointError> {
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
            return Err(CheckpointError::Key("the origin must be non-empty, without spaces or '+'".into()));
        }
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = B64.decode(body.trim()).map_err(|_| CheckpointError::Key("not PEM".into()))?;
        let key = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| CheckpointError::Key("not an Ed25519 PKCS#8 key".into()))?;
        let seed = sha2::Sha256::digest(&der).into();
        Ok(CheckpointSigner { name: name.to_owned(), key, seed })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A secret for another purpose, derived from this key under `label` (HMAC-SHA256), so
    /// that instances sharing the checkpoint key share it too without a second key file.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.seed);
        aws_lc_rs::hmac::sign(&key, label.as_bytes()).as_ref().try_into().expect("32 bytes")
    }

    /// The verifier key to give auditors and witnesses.
    pub fn verifier_key(&self) -> String {
        let public = self.key.public_key().as_ref();
        let mut encoded = vec![ED25519_TYPE];
        encoded.extend_from_slice(public);
        format!("{}+{}+{}", self.name, hex::encode(key_id(&self.name, public)), B64.encode(encoded))
    }

    /// Signs a checkpoint whose origin is this key's name.
    pub fn sign(&self, size: u64, root: &Hash) -> String {
        let time = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        let body = Checkpoint { origin: self.name.clone(), size, root: *root, time }.body();
        let mut sig = key_id(&self.name, self.key.public_key().as_ref()).to_vec();
        sig.extend_from_slice(self.key.sign(body.as_bytes()).as_ref());
        format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(sig))
    }
}

/// A verifier key in `<name>+<hex id>+<base64(0x01 ‖ key)>` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    id: [u8; 4],
    public: Vec<u8>,
}

impl VerifierKey {
    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::BadVerifierKey);
        };
        let id: [u8; 4] = hex::decode(id).ok().and_then(|v| v.try_into().ok()).ok_or(CheckpointError::BadVerifierKey)?;
        let key = B64.decode(key).map_err(|_| CheckpointError::BadVerifierKey)?;
        if key.len() != 33 || key[0] != ED25519_TYPE || key_id(name, &key[1..]) != id {
            return Err(CheckpointError::BadVerifierKey);
        }
        Ok(VerifierKey { name: name.to_owned(), id, public: key[1..].to_vec() })
    }

    /// Verifies a signed checkpoint and returns its contents. Signatures by other keys are
    /// ignored, as the signed-note specification requires; at least one must be ours.
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let split = note.rfind("\n\n").ok_or(CheckpointError::Malformed("no blank line before the signatures"))?;
        let (body, sigs) = (&note[..split + 1], &note[split + 2..]);
        let mut verified = false;
        for line in sigs.lines() {
            let rest =
                line.strip_prefix(SIGNATURE_PREFIX).ok_or(CheckpointError::Malformed("a signature line must start with an em dash"))?;
            let (name, sig) = rest.split_once(' ').ok_or(CheckpointError::Malformed("a signature line needs a name and a signature"))?;
            let sig = B64.decode(sig).map_err(|_| CheckpointError::Malformed("a signature is not base64"))?;
            if name != self.name || sig.len() < 4 || sig[..4] != self.id {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(body.as_bytes(), &sig[4..])
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            verified = true;
        }
        if !verified {
            return Err(CheckpointError::NotSigned(self.name.clone()));
        }
        let mut lines = body.lines();
        let origin = lines.next().ok_or(CheckpointError::Malformed("no origin line"))?.to_owned();
        let size = lines.next().and_then(|l| l.parse().ok()).ok_or(CheckpointError::Malformed("no tree size line"))?;
        let root: Hash = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let time = lines.find_map(|l| l.strip_prefix("time ")).map(str::to_owned);
        if origin != self.name {
            return Err(CheckpointError::WrongOrigin { expected: self.name.clone(), found: origin });
        }
        Ok(Checkpoint { origin, size, root, time })
    }
}

fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Writes `note` as `{dir}/checkpoint-{size}` and replaces `{dir}/checkpoint` (the latest)
/// atomically, for auditors and witnesses to keep outside the database.
pub fn publish(dir: &Path, size: u64, note: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("checkpoint-{size:012}")), note)?;
    let tmp = dir.join(".checkpoint.tmp");
    std::fs::write(&tmp, note)?;
    std::fs::rename(tmp, dir.join("checkpoint"))
}

/// Every checkpoint file published in `dir` (`checkpoint-*`), with its file name.
pub fn published(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") {
            out.push((name, std::fs::read_to_string(entry.path())?));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CheckpointSigner {
        let dir = tempfile::tempdir().unwrap();
        CheckpointSigner::load_or_create(&dir.path().join("k.pem"), "radsight.test/audit").unwrap()
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_verifier_key_and_tampering_is_caught() {
        let s = signer();
        let vkey = VerifierKey::parse(&s.verifier_key()).unwrap();
        let root = [7u8; 32];
        let note = s.sign(42, &root);
        assert!(note.starts_with("radsight.test/audit\n42\n"));
        let opened = vkey.open(&note).unwrap();
        assert_eq!((opened.origin.as_str(), opened.size, opened.root), ("radsight.test/audit", 42, root));
        let signed_at = opened.time.expect("a signing time");
        assert!(time::OffsetDateTime::parse(&signed_at, &time::format_description::well_known::Rfc3339).is_ok(), "{signed_at}");
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(vkey.open(&forged), Err(CheckpointError::BadSignature("radsight.test/audit".into())));
        let other = VerifierKey::parse(&signer().verifier_key()).unwrap();
        assert!(matches!(other.open(&note), Err(CheckpointError::BadSignature(_)) | Err(CheckpointError::NotSigned(_))));
    }

    #[test]
    fn verifier_keys_must_be_well_formed() {
        let good = signer().verifier_key();
        assert!(VerifierKey::parse(&good).is_ok());
        let mut tampered_id = good.clone();
        let plus = tampered_id.find('+').unwrap();
        tampered_id.replace_range(plus + 1..plus + 3, "ff");
        assert_eq!(VerifierKey::parse(&tampered_id), Err(CheckpointError::BadVerifierKey));
        assert_eq!(VerifierKey::parse("nonsense"), Err(CheckpointError::BadVerifierKey));
    }
}
