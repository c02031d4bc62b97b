//! radsight's own signing keys: the keys it signs SMART Backend Services client assertions
//! with when it writes results to an EHR, published as a JWKS at `/.well-known/jwks.json` for
//! the EHR's authorisation server to check them against.
//!
//! The keyring is a directory: `keyring.json` lists the keys (kid, algorithm, when made, when
//! retired) and each private key is `{kid}.key.pem` (PKCS#8, mode 0600). A rotation makes a new
//! key the active one and retires the old; a retired key stays published for
//! `outputs.retired_key_publish_secs`, long enough for every assertion it signed (five minutes)
//! and for servers' cached copies of the key set, and `radsight keys prune` then deletes it.
//! The manifest is replaced by rename, so a reader never sees half of it.

use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use super::ClientKey;

const MANIFEST: &str = "keyring.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("reading the keyring {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing the keyring {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the keyring manifest {path} is not valid: {problem}")]
    Manifest { path: PathBuf, problem: String },
    #[error("the key {kid} in {dir}: {source}")]
    Key { kid: String, dir: PathBuf, source: super::KeyError },
    #[error("{0} is not a backend-services signing algorithm (use ES384 or RS384)")]
    Algorithm(String),
}

/// One key of the ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    pub kid: String,
    /// `ES384` or `RS384`: the two SMART Backend Services requires servers to support.
    pub alg: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When a newer key replaced it; `None` for the active key.
    pub retired_at: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    keys: Vec<KeyEntry>,
}

fn algorithm(name: &str) -> Result<Algorithm, KeyringError> {
    match name {
        "ES384" => Ok(Algorithm::ES384),
        "RS384" => Ok(Algorithm::RS384),
        other => Err(KeyringError::Algorithm(other.to_owned())),
    }
}

/// The keyring in one directory.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
}

impl Keyring {
    pub fn open(dir: &Path) -> Keyring {
        Keyring { dir: dir.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    fn read_manifest(&self) -> Result<Manifest, KeyringError> {
        let path = self.manifest_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyringError::Manifest { path, problem: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(source) => Err(KeyringError::Read { path, source }),
        }
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), KeyringError> {
        let path = self.manifest_path();
        let tmp = self.dir.join(format!(".{MANIFEST}.{}", uuid::Uuid::new_v4()));
        let bytes = serde_json::to_vec_pretty(manifest).expect("the manifest serialises");
        std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|source| KeyringError::Write { path, source })
    }

    /// Every key, oldest first.
    pub fn entries(&self) -> Result<Vec<KeyEntry>, KeyringError> {
        Ok(self.read_manifest()?.keys)
    }

    fn load(&self, entry: &KeyEntry) -> Result<ClientKey, KeyringError> {
        let path = self.dir.join(format!("{}.key.pem", entry.kid));
        let pem = std::fs::read_to_string(&path).map_err(|source| KeyringError::Read { path, source })?;
        let key = ClientKey::from_pem(algorithm(&entry.alg)?, &pem).map_err(|source| KeyringError::Key {
            kid: entry.kid.clone(),
            dir: self.dir.clone(),
            source,
        })?;
        if key.kid != entry.kid {
            return Err(KeyringError::Manifest { path: self.manifest_path(), problem: format!("{}.key.pem holds another key", entry.kid) });
        }
        Ok(key)
    }

    /// The key assertions are signed with now; `None` before the first `radsight keys rotate`.
    pub fn active(&self) -> Result<Option<ClientKey>, KeyringError> {
        let manifest = self.read_manifest()?;
        manifest.keys.iter().rev().find(|k| k.retired_at.is_none()).map(|k| self.load(k)).transpose()
    }

    /// Makes a new active key with `alg` and retires the current one; the new entry.
    pub fn rotate(&self, alg: Algorithm, now: i64) -> Result<KeyEntry, KeyringError> {
        let alg_name = match alg {
            Algorithm::ES384 => "ES384",
            Algorithm::RS384 => "RS384",
            other => return Err(KeyringError::Algorithm(format!("{other:?}"))),
        };
        std::fs::create_dir_all(&self.dir).map_err(|source| KeyringError::Write { path: self.dir.clone(), source })?;
        let mut manifest = self.read_manifest()?;
        let key = ClientKey::generate(alg).map_err(|source| KeyringError::Key { kid: "(new)".into(), dir: self.dir.clone(), source })?;
        let path = self.dir.join(format!("{}.key.pem", key.kid));
        write_private(&path, &key.to_pem()).map_err(|source| KeyringError::Write { path, source })?;
        for k in manifest.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
            k.retired_at = Some(now);
        }
        let entry = KeyEntry { kid: key.kid.clone(), alg: alg_name.into(), created_at: now, retired_at: None };
        manifest.keys.push(entry.clone());
        self.write_manifest(&manifest)?;
        Ok(entry)
    }

    /// The public keys to publish: the active key and those retired less than `keep_secs` ago.
    pub fn published(&self, now: i64, keep_secs: u64) -> Result<JwkSet, KeyringError> {
        let manifest = self.read_manifest()?;
        let keys = manifest
            .keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|at| now.saturating_sub(at) < keep_secs as i64))
            .map(|k| self.load(k).map(|key| key.public_jwk()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JwkSet { keys })
    }

    /// Deletes keys retired `keep_secs` or more ago (no longer published); their kids.
    pub fn prune(&self, now: i64, keep_secs: u64) -> Result<Vec<String>, KeyringError> {
        let mut manifest = self.read_manifest()?;
        let (gone, kept): (Vec<KeyEntry>, Vec<KeyEntry>) =
            manifest.keys.into_iter().partition(|k| k.retired_at.is_some_and(|at| now.saturating_sub(at) >= keep_secs as i64));
        manifest.keys = kept;
        self.write_manifest(&manifest)?;
        for k in &gone {
            let path = self.dir.join(format!("{}.key.pem", k.kid));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(KeyringError::Write { path, source }),
            }
        }
        Ok(gone.into_iter().map(|k| k.kid).collect())
    }
}

/// Writes a secret readable by its owner only (mode 0600 on Unix).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_old_key_published_until_its_window_closes_then_prunes_it() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path());
        assert!(ring.active().unwrap().is_none(), "an empty keyring has no active key");
        let first = ring.rotate(Algorithm::ES384, 1_000).unwrap();
        let second = ring.rotate(Algorithm::RS384, 2_000).unwrap();
        assert_eq!(ring.active().unwrap().unwrap().kid, second.kid);
        let kids = |set: JwkSet| set.keys.into_iter().map(|k| k.common.key_id.unwrap()).collect::<Vec<_>>();
        assert_eq!(kids(ring.published(2_000 + 3_599, 3_600).unwrap()), [first.kid.clone(), second.kid.clone()]);
        assert_eq!(kids(ring.published(2_000 + 3_600, 3_600).unwrap()), std::slice::from_ref(&second.kid));
        assert!(ring.prune(2_000 + 3_599, 3_600).unwrap().is_empty(), "still published: kept");
        assert_eq!(ring.prune(2_000 + 3_600, 3_600).unwrap(), std::slice::from_ref(&first.kid));
        assert!(!dir.path().join(format!("{}.key.pem", first.kid)).exists());
        assert_eq!(ring.entries().unwrap().len(), 1);
        let published = serde_json::to_value(ring.published(9_999, 3_600).unwrap()).unwrap();
        assert!(published["keys"][0].get("d").is_none(), "no private part is published");
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let entry = Keyring::open(dir.path()).rotate(Algorithm::ES384, 1).unwrap();
        let mode = std::fs::metadata(dir.path().join(format!("{}.key.pem", entry.kid))).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_that_does_not_match_its_kid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path());
        let a = ring.rotate(Algorithm::ES384, 1).unwrap();
        let other = ClientKey::generate(Algorithm::ES384).unwrap();
        std::fs::remove_file(dir.path().join(format!("{}.key.pem", a.kid))).unwrap();
        std::fs::write(dir.path().join(format!("{}.key.pem", a.kid)), other.to_pem()).unwrap();
        assert!(matches!(ring.active(), Err(KeyringError::Manifest { .. })));
    }
}
