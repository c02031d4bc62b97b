//! `radsight keys`: client signing keys for registering and testing a CDS client (generate a
//! key pair and its JWKS, sign a one-call JWT), and radsight's own keyring for SMART Backend
//! Services (rotate, list, print the published JWKS, prune).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use crate::configuration::Settings;
use crate::keys::ClientKey;
use crate::keys::keyring::Keyring;

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Alg {
    Es384,
    Es256,
    Rs384,
    Rs256,
}

impl From<Alg> for jsonwebtoken::Algorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Es384 => jsonwebtoken::Algorithm::ES384,
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
            Alg::Rs384 => jsonwebtoken::Algorithm::RS384,
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

/// The algorithms SMART Backend Services servers must support.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BackendAlg {
    Es384,
    Rs384,
}

impl From<BackendAlg> for jsonwebtoken::Algorithm {
    fn from(a: BackendAlg) -> Self {
        match a {
            BackendAlg::Es384 => jsonwebtoken::Algorithm::ES384,
            BackendAlg::Rs384 => jsonwebtoken::Algorithm::RS384,
        }
    }
}

#[derive(Subcommand)]
pub(super) enum KeysCommand {
    /// Generate a key pair: writes DIR/client.key.pem and DIR/client.jwks.json, prints the JWKS.
    Generate {
        #[arg(long, value_enum, default_value = "es384")]
        alg: Alg,
        #[arg(long, default_value = "keys")]
        out: PathBuf,
    },
    /// radsight's own signing key (SMART Backend Services, for writing results to an EHR): make
    /// a new active key and retire the current one, which stays published for
    /// `outputs.retired_key_publish_secs`. The first run makes the first key.
    Rotate {
        #[arg(long, value_enum, default_value = "es384")]
        alg: BackendAlg,
    },
    /// radsight's signing keys: kid, algorithm, made, retired, published.
    List,
    /// Print the JWKS radsight publishes at /.well-known/jwks.json (register it, or that URL,
    /// with each EHR's authorisation server).
    Published,
    /// Delete retired keys that are no longer published.
    Prune,
    /// Print a signed CDS client JWT for one call.
    Token {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, value_enum, default_value = "es384")]
        alg: Alg,
        /// The client's registered issuer.
        #[arg(long)]
        iss: String,
        /// The exact URL that will be called, e.g. http://localhost:8080/cds-services/radsight-patient-view
        #[arg(long)]
        aud: String,
        /// A `scope` claim, e.g. "audit.read" for an auditor.
        #[arg(long)]
        scope: Option<String>,
    },
}

pub(super) fn run(command: KeysCommand, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    // Only the commands on radsight's own keyring read the configuration.
    let keyring = || -> anyhow::Result<(Keyring, u64)> {
        let settings = Settings::load(config)?;
        Ok((Keyring::open(&settings.outputs.keys_dir), settings.outputs.retired_key_publish_secs))
    };
    match command {
        KeysCommand::Rotate { alg } => {
            let (ring, keep) = keyring()?;
            let entry = ring.rotate(alg.into(), now())?;
            eprintln!(
                "new active key {} ({}) in {}; the previous one, if any, stays published for {keep} s",
                entry.kid,
                entry.alg,
                ring.dir().display()
            );
            println!("{}", entry.kid);
        }
        KeysCommand::List => {
            let (ring, keep) = keyring()?;
            println!("{:<43}  {:<5}  {:>12}  {:>12}  PUBLISHED", "KID", "ALG", "CREATED", "RETIRED");
            for k in ring.entries()? {
                let published = k.retired_at.is_none_or(|at| now().saturating_sub(at) < keep as i64);
                let retired = k.retired_at.map(|t| t.to_string()).unwrap_or_else(|| "active".into());
                println!("{:<43}  {:<5}  {:>12}  {:>12}  {}", k.kid, k.alg, k.created_at, retired, if published { "yes" } else { "no" });
            }
        }
        KeysCommand::Published => {
            let (ring, keep) = keyring()?;
            println!("{}", serde_json::to_string_pretty(&ring.published(now(), keep)?)?);
        }
        KeysCommand::Prune => {
            let (ring, keep) = keyring()?;
            for kid in ring.prune(now(), keep)? {
                println!("deleted {kid}");
            }
        }
        KeysCommand::Generate { alg, out } => {
            let key = ClientKey::generate(alg.into())?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let key_path = out.join("client.key.pem");
            write_private(&key_path, &key.to_pem())?;
            let jwks = serde_json::to_string_pretty(&key.jwks())?;
            let jwks_path = out.join("client.jwks.json");
            std::fs::write(&jwks_path, &jwks).with_context(|| format!("writing {}", jwks_path.display()))?;
            eprintln!("private key: {} (keep it secret)\nJWKS: {}", key_path.display(), jwks_path.display());
            println!("{jwks}");
        }
        KeysCommand::Token { key, alg, iss, aud, scope } => {
            let pem = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            let key = ClientKey::from_pem(alg.into(), &pem)?;
            let token = match scope {
                None => key.client_token(&iss, &aud)?,
                Some(scope) => key.scoped_token(&iss, &aud, &scope)?,
            };
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a secret readable by its owner only (mode 0600 on Unix).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
