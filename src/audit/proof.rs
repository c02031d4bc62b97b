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

/// A receipt for one logged entry that a third party can check offline: the entry's canonical
/// form, its leaf index, the inclusion proof into a tree of `tree_size` leaves, and the signed
/// checkpoint note of that tree (C2SP), whose key is the log's published verifier key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Receipt {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The entry's canonical form (UTF-8 JSON): its SHA-256 leaf hash is what the proof proves.
    pub entry: String,
    /// The audit path, leaf to root, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint note the proof is against.
    pub checkpoint: String,
    /// The log's origin line (the first line of the note).
    pub origin: String,
}

/// The receipt of the newest `action` entry naming entity `kind`/`id` (for example the
/// `model.inference` entry of a result), against a checkpoint signed now (or the one already
/// signed at the current size). `None` when no such entry exists.
pub async fn receipt_for(
    db: &sea_orm::DatabaseConnection,
    audit: &super::AuditLog,
    signer: &super::checkpoint::CheckpointSigner,
    publish_dir: Option<&std::path::Path>,
    action: super::Action,
    kind: &str,
    id: &str,
) -> Result<Option<Receipt>, ReceiptError> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
    // Entities are stored as JSON `[{"kind":…,"id":…}]`; the exact pair is matched after the
    // coarse LIKE, so an id that is a substring of another cannot be mistaken for it.
    let candidates = audit_entry::Entity::find()
        .filter(audit_entry::Column::Action.eq(action.as_str()))
        .filter(audit_entry::Column::Entities.contains(id))
        .order_by_desc(audit_entry::Column::Seq)
        .all(db)
        .await
        .map_err(ReceiptError::Read)?;
    let wanted = serde_json::json!({"kind": kind, "id": id});
    let Some(entry) = candidates
        .into_iter()
        .find(|e| serde_json::from_str::<Vec<serde_json::Value>>(&e.entities).is_ok_and(|entities| entities.contains(&wanted)))
    else {
        return Ok(None);
    };
    let (size, note) = audit.checkpoint(db, signer, publish_dir).await.map_err(ReceiptError::Checkpoint)?.ok_or(ReceiptError::EmptyLog)?;
    let index = entry.seq as u64 - 1;
    let doc = inclusion_document(db, index, size, Attach::EntryAndCheckpoint { checkpoint_note: Some(note.clone()) }).await?;
    let attached = doc.attached.expect("the entry was asked for");
    Ok(Some(Receipt {
        leaf_index: index,
        tree_size: size,
        entry: attached.entry,
        proof: doc.proof,
        origin: note.lines().next().unwrap_or_default().to_owned(),
        checkpoint: note,
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("reading the audit log")]
    Read(#[source] DbErr),
    #[error("signing a checkpoint")]
    Checkpoint(#[source] super::AuditError),
    #[error("the audit log is empty")]
    EmptyLog,
    #[error(transparent)]
    Proof(#[from] ProofError),
}
