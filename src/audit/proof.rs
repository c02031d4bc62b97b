//! The inclusion-proof document: one builder for `radsight audit prove` and the auditors'
//! `GET /audit/proofs/inclusion`, so both hand out the same proof (RFC 9162 audit path, hex).
//!
//! The API answers with the proof alone; the CLI also attaches the entry's canonical form (so
//! the leaf hash can be checked from content) and the signed checkpoint note it proves against.

use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use serde::Serialize;

use super::canonical_bytes;
use super::tree::{self, TreeError, to_hex};
use crate::store::entities::audit_entry;

/// The proof that leaf `index` is in the tree of the first `tree_size` entries.
///
/// Fields are declared in alphabetical order: the JSON keys come out as they always have.
#[derive(Debug, Serialize)]
pub struct InclusionDocument {
    /// The entry and checkpoint, when asked for ([`Attach::EntryAndCheckpoint`]).
    #[serde(flatten)]
    pub attached: Option<Attached>,
    pub index: u64,
    pub leaf_hash: String,
    /// The audit path, leaf to root.
    pub proof: Vec<String>,
    pub root_hash: String,
    pub tree_size: u64,
}

/// What the CLI's document carries besides the proof.
#[derive(Debug, Serialize)]
pub struct Attached {
    /// The signed checkpoint note proved against; `null` when the tree size was chosen.
    pub checkpoint: Option<String>,
    /// The entry's canonical form, whose SHA-256 leaf hash is `leaf_hash`.
    pub entry: String,
}

/// What to attach to the proof.
#[derive(Debug)]
pub enum Attach {
    /// The proof alone (the auditors' API).
    Nothing,
    /// The entry itself and the checkpoint note (if any) the proof is against (the CLI).
    EntryAndCheckpoint { checkpoint_note: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {tree_size} entries")]
    OutOfRange { index: u64, tree_size: u64 },
    #[error("no such entry")]
    NoEntry { index: u64 },
    #[error("reading audit entry {seq}")]
    Entry { seq: i64, source: DbErr },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Builds the inclusion proof of leaf `index` (sequence number − 1) in a tree of `tree_size`.
pub async fn inclusion_document<C: ConnectionTrait>(
    conn: &C,
    index: u64,
    tree_size: u64,
    attach: Attach,
) -> Result<InclusionDocument, ProofError> {
    if index >= tree_size {
        return Err(ProofError::OutOfRange { index, tree_size });
    }
    let attached = match attach {
        Attach::Nothing => None,
        Attach::EntryAndCheckpoint { checkpoint_note } => {
            let seq = index as i64 + 1;
            let entry = audit_entry::Entity::find_by_id(seq)
                .one(conn)
                .await
                .map_err(|source| ProofError::Entry { seq, source })?
                .ok_or(ProofError::NoEntry { index })?;
            let entry = String::from_utf8(canonical_bytes(&entry)).expect("canonical form is UTF-8");
            Some(Attached { checkpoint: checkpoint_note, entry })
        }
    };
    let (leaf, proof) = tree::inclusion_proof(conn, index, tree_size).await?;
    let root = tree::root(conn, tree_size).await?;
    Ok(InclusionDocument {
        attached,
        index,
        leaf_hash: to_hex(&leaf),
        proof: proof.iter().map(to_hex).collect(),
        root_hash: to_hex(&root),
        tree_size,
    })
}
