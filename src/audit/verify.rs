//! Offline verification of the audit log (`radsight audit verify`).
//!
//! One pass over the entries in sequence order:
//! - each entry's hash is recomputed from its stored columns (a changed row fails here),
//!   and it must link to its predecessor with the next sequence number (a deleted, inserted or
//!   reordered row fails here);
//! - its Merkle leaf and every subtree it completes are recomputed and compared with the stored
//!   tree (proofs served from a damaged tree would be wrong);
//! - whenever the recomputed tree reaches the size of a checkpoint, stored in the database or
//!   published outside it, its root must equal the checkpoint's (a rewrite of the whole table,
//!   with a recomputed chain and tree, fails here against the published copies);
//! - a checkpoint larger than the log means the newest entries were removed.
//!
//! Checkpoint signatures are checked with the log's verifier key when one is given.
//!
//! Pages are read as one aggregated row each, hashed on every core while the next page is read,
//! and their tree nodes compared behind; problems are still reported in log order.

use std::collections::BTreeMap;
use std::path::Path;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryOrder, Statement};
use sha2::Digest;

use super::Canonical;
use super::checkpoint::{self, CheckpointError, VerifierKey};
use super::merkle::{self, Hash, NodeId};
use super::tree::{HexHash, to_hex};
use crate::store::entities::{audit_checkpoint, audit_entry};

/// The first place the log does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq}: its contents do not match its hash (the row was changed)")]
    ContentChanged { seq: i64 },
    #[error("entry {seq}: it does not link to the entry before it (a row was removed, inserted or reordered)")]
    BrokenLink { seq: i64 },
    #[error("entry {found} follows entry {previous}: entries are missing or out of order")]
    SequenceGap { previous: i64, found: i64 },
    #[error("entry {seq}: unknown format version {version}")]
    UnknownFormat { seq: i64, version: i32 },
    #[error("stored tree node {level}/{index} does not match the entries (from entry {first_seq})")]
    TreeMismatch { level: u32, index: u64, first_seq: i64 },
    #[error("checkpoint {source_name} (tree size {size}) does not match the log: the entries up to {size} were rewritten")]
    CheckpointMismatch { source_name: String, size: u64 },
    #[error("checkpoint {source_name} covers {size} entries but the log has only {entries}: entries were removed")]
    Truncated { source_name: String, size: u64, entries: u64 },
    #[error("checkpoint {source_name} is not valid: {why}")]
    BadCheckpoint { source_name: String, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
    /// The newest entry's chain hash.
    pub head_hash: String,
    /// The Merkle root over all entries.
    pub root: String,
    /// Checkpoints compared (database and published).
    pub checkpoints: usize,
    /// Whether checkpoint signatures were checked (a verifier key was given).
    pub signatures_checked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not read the audit trail")]
    Read(#[from] DbErr),
    #[error("could not read published checkpoints")]
    ReadCheckpoints(#[from] std::io::Error),
    #[error("the audit trail is not intact: {0}")]
    Broken(ChainBreak),
}

/// Where checkpoints live outside the database, and the key that signed them.
#[derive(Default)]
pub struct VerifyOptions<'a> {
    pub published_dir: Option<&'a Path>,
    pub verifier: Option<&'a VerifierKey>,
}

fn parse_unverified(note: &str) -> Option<(u64, Hash)> {
    let mut lines = note.lines();
    lines.next()?;
    let size = lines.next()?.parse().ok()?;
    use base64::Engine;
    let root = base64::engine::general_purpose::STANDARD.decode(lines.next()?).ok()?.try_into().ok()?;
    Some((size, root))
}

/// Size → (source, root) for every checkpoint, signatures checked when a key is given.
async fn collect_checkpoints(db: &DatabaseConnection, opts: &VerifyOptions<'_>) -> Result<BTreeMap<u64, Vec<(String, Hash)>>, VerifyError> {
    let mut notes: Vec<(String, String)> = audit_checkpoint::Entity::find()
        .order_by_asc(audit_checkpoint::Column::TreeSize)
        .all(db)
        .await?
        .into_iter()
        .map(|c| (format!("database#{}", c.tree_size), c.note))
        .collect();
    if let Some(dir) = opts.published_dir {
        notes.extend(checkpoint::published(dir)?.into_iter().map(|(name, note)| (dir.join(name).display().to_string(), note)));
    }
    let mut map: BTreeMap<u64, Vec<(String, Hash)>> = BTreeMap::new();
    for (source_name, note) in notes {
        let parsed = match opts.verifier {
            Some(v) => v.open(&note).map(|c| (c.size, c.root)).map_err(|e: CheckpointError| e.to_string()),
            None => parse_unverified(&note).ok_or_else(|| "it is not a checkpoint".to_owned()),
        };
        match parsed {
            Ok((size, root)) => map.entry(size).or_default().push((source_name, root)),
            Err(why) => return Err(VerifyError::Broken(ChainBreak::BadCheckpoint { source_name, why })),
        }
    }
    Ok(map)
}

/// Entries read per page: memory stays flat (a page, the tree's frontier and the checkpoints).
const PAGE: u64 = 4096;

/// One page of entries in sequence order after `after`.
///
/// The page comes back as one row holding a JSON array of rows: SQLite's driver hands each row
/// over from its worker thread on its own, and at a million entries that hand-over (wake-ups
/// and allocations per row) cost more than hashing them.
async fn page_after(db: DatabaseConnection, after: i64) -> Result<Vec<audit_entry::Model>, DbErr> {
    const COLUMNS: &str =
        "seq, format_version, recorded_at, action, outcome, actor_iss, actor_user, patient_ref, entities, detail, prev_hash, entry_hash";
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT json_agg(json_build_array({COLUMNS}) ORDER BY seq)::text AS page FROM \
             (SELECT {COLUMNS} FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2) p"
        ),
        _ => format!(
            "SELECT json_group_array(json_array({COLUMNS})) AS page FROM \
             (SELECT {COLUMNS} FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?)"
        ),
    };
    let row = db.query_one_raw(Statement::from_sql_and_values(backend, sql, [after.into(), (PAGE as i64).into()])).await?;
    let Some(text) = row.map(|r| r.try_get::<Option<String>>("", "page")).transpose()?.flatten() else {
        return Ok(Vec::new());
    };
    // Each row is an array of the columns in the entity's field order (COLUMNS above).
    let mut page: Vec<audit_entry::Model> =
        serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("reading a page of the audit trail: {e}")))?;
    // SQLite's aggregate keeps the subquery's order in practice, but only ORDER BY promises it.
    page.sort_unstable_by_key(|e| e.seq);
    Ok(page)
}

/// Each entry's recomputed chain hash (hex) and Merkle leaf, from one serialisation of its
/// canonical form, spread over the available cores (the entries are independent; only the
/// checks that follow are sequential).
fn hash_page(page: &[audit_entry::Model]) -> Vec<(HexHash, Hash)> {
    // One serialisation buffer per thread, reused from entry to entry.
    let hash_all = |entries: &[audit_entry::Model]| {
        let mut bytes = Vec::with_capacity(2048);
        entries
            .iter()
            .map(|e| {
                bytes.clear();
                Canonical::of(e).write_into(&mut bytes);
                (HexHash::of(&sha2::Sha256::digest(&bytes).into()), merkle::leaf_hash(&bytes))
            })
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || page.len() < 256 {
        return hash_all(page);
    }
    let chunk = page.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = page.chunks(chunk).map(|c| scope.spawn(move || hash_all(c))).collect();
        parts.into_iter().flat_map(|h| h.join().expect("hashing does not panic")).collect()
    })
}

/// Walks the whole log in sequence order, a page at a time, in O(log n) memory.
///
/// Three things overlap: the next page is read while this one is hashed (on every core) and
/// checked, and the stored tree nodes a page completed are compared while the next page is
/// read and hashed. Problems are still reported in log order: a page's node comparison is
/// awaited before any entry of the following page can be reported.
pub async fn verify_log(db: &DatabaseConnection, opts: &VerifyOptions<'_>) -> Result<ChainReport, VerifyError> {
    let checkpoints = collect_checkpoints(db, opts).await?;
    let checked = checkpoints.values().map(Vec::len).sum();
    let broken = |b: ChainBreak| VerifyError::Broken(b);
    let (mut previous_seq, mut previous_hash) = (0i64, HexHash::ZERO);
    let mut frontier: Vec<(NodeId, Hash)> = Vec::new();
    let mut size = 0u64;
    let check_root = |frontier: &[(NodeId, Hash)], size: u64| -> Result<(), VerifyError> {
        for (source_name, root) in checkpoints.get(&size).into_iter().flatten() {
            if *root != merkle::frontier_root(frontier) {
                return Err(broken(ChainBreak::CheckpointMismatch { source_name: source_name.clone(), size }));
            }
        }
        Ok(())
    };
    check_root(&frontier, size)?;
    let mut next_page = tokio::spawn(page_after(db.clone(), 0));
    let mut pending_nodes: Option<tokio::task::JoinHandle<Result<(), VerifyError>>> = None;
    loop {
        let page = next_page.await.map_err(|e| VerifyError::Read(DbErr::Custom(e.to_string())))??;
        if page.is_empty() {
            break;
        }
        let last_seq = page[page.len() - 1].seq;
        next_page = tokio::spawn(page_after(db.clone(), last_seq));
        let (page, hashes) = tokio::task::spawn_blocking(move || {
            let hashes = hash_page(&page);
            (page, hashes)
        })
        .await
        .map_err(|e| VerifyError::Read(DbErr::Custom(e.to_string())))?;
        if let Some(previous) = pending_nodes.take() {
            previous.await.map_err(|e| VerifyError::Read(DbErr::Custom(e.to_string())))??;
        }
        let mut expected_nodes = Vec::new();
        for (entry, (recomputed, leaf)) in page.iter().zip(hashes) {
            check_linked(entry, recomputed.as_str(), previous_seq, previous_hash.as_str()).map_err(broken)?;
            expected_nodes.extend(merkle::push_leaf(&mut frontier, size, leaf).into_iter().map(|n| (n, entry.seq)));
            size += 1;
            check_root(&frontier, size)?;
            previous_seq = entry.seq;
            previous_hash = recomputed;
        }
        let db = db.clone();
        pending_nodes = Some(tokio::spawn(async move { compare_nodes(&db, &expected_nodes).await }));
    }
    if let Some(previous) = pending_nodes.take() {
        previous.await.map_err(|e| VerifyError::Read(DbErr::Custom(e.to_string())))??;
    }
    let entries = size;
    if let Some((size, sources)) = checkpoints.range(entries + 1..).next() {
        return Err(broken(ChainBreak::Truncated { source_name: sources[0].0.clone(), size: *size, entries }));
    }
    Ok(ChainReport {
        entries,
        head_hash: previous_hash.as_str().to_owned(),
        root: to_hex(&merkle::frontier_root(&frontier)),
        checkpoints: checked,
        signatures_checked: opts.verifier.is_some(),
    })
}

/// A recomputed tree node and the sequence number of the entry that completed it.
type ExpectedNode = ((NodeId, Hash), i64);

/// Compares recomputed tree nodes with the stored ones, one range query per level.
async fn compare_nodes(db: &DatabaseConnection, expected: &[ExpectedNode]) -> Result<(), VerifyError> {
    let mut by_level: BTreeMap<u32, Vec<&ExpectedNode>> = BTreeMap::new();
    for e in expected {
        by_level.entry(e.0.0.level).or_default().push(e);
    }
    for (level, nodes) in by_level {
        let (lo, hi) = (nodes[0].0.0.index, nodes[nodes.len() - 1].0.0.index);
        let stored = stored_nodes(db, level, lo, hi).await?;
        for ((id, hash), seq) in nodes {
            if stored.get(&id.index).map(String::as_str) != Some(HexHash::of(hash).as_str()) {
                return Err(VerifyError::Broken(ChainBreak::TreeMismatch { level, index: id.index, first_seq: *seq }));
            }
        }
    }
    Ok(())
}

/// Stored tree nodes `lo..=hi` of `level`, by index, read as one aggregated row (see
/// [`page_after`]).
async fn stored_nodes(db: &DatabaseConnection, level: u32, lo: u64, hi: u64) -> Result<BTreeMap<u64, String>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT json_agg(json_build_array(idx, hash))::text AS nodes FROM audit_nodes WHERE level = $1 AND idx BETWEEN $2 AND $3"
        }
        _ => "SELECT json_group_array(json_array(idx, hash)) AS nodes FROM audit_nodes WHERE level = ? AND idx BETWEEN ? AND ?",
    };
    let values = [(level as i32).into(), (lo as i64).into(), (hi as i64).into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let Some(text) = row.map(|r| r.try_get::<Option<String>>("", "nodes")).transpose()?.flatten() else {
        return Ok(BTreeMap::new());
    };
    let nodes: Vec<(i64, String)> = serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("reading audit tree nodes: {e}")))?;
    Ok(nodes.into_iter().map(|(idx, hash)| (idx as u64, hash)).collect())
}

#[cfg(test)]
fn check_entry(entry: &audit_entry::Model, previous_seq: i64, previous_hash: &str) -> Result<(), ChainBreak> {
    check_linked(entry, &Canonical::of(entry).hash(), previous_seq, previous_hash)
}

/// Checks one entry against its recomputed hash and its predecessor.
fn check_linked(entry: &audit_entry::Model, recomputed: &str, previous_seq: i64, previous_hash: &str) -> Result<(), ChainBreak> {
    if entry.format_version != super::FORMAT_VERSION {
        return Err(ChainBreak::UnknownFormat { seq: entry.seq, version: entry.format_version });
    }
    if recomputed != entry.entry_hash {
        return Err(ChainBreak::ContentChanged { seq: entry.seq });
    }
    if entry.prev_hash != previous_hash {
        return Err(ChainBreak::BrokenLink { seq: entry.seq });
    }
    if entry.seq != previous_seq + 1 {
        return Err(ChainBreak::SequenceGap { previous: previous_seq, found: entry.seq });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::GENESIS_HASH;

    fn entry(seq: i64, prev: &str) -> audit_entry::Model {
        let mut m = audit_entry::Model {
            seq,
            format_version: 1,
            recorded_at: "2026-11-29T00:00:00Z".into(),
            action: "cds.hook".into(),
            outcome: "success".into(),
            actor_iss: Some("https://ehr.example".into()),
            actor_user: None,
            patient_ref: Some("Patient/p1".into()),
            entities: "[]".into(),
            detail: "{}".into(),
            prev_hash: prev.into(),
            entry_hash: String::new(),
        };
        m.entry_hash = Canonical::of(&m).hash();
        m
    }

    #[test]
    fn an_intact_pair_verifies_and_each_kind_of_damage_is_named() {
        let a = entry(1, GENESIS_HASH);
        let b = entry(2, &a.entry_hash);
        assert_eq!(check_entry(&a, 0, GENESIS_HASH), Ok(()));
        assert_eq!(check_entry(&b, 1, &a.entry_hash), Ok(()));

        let mut changed = b.clone();
        changed.outcome = "rejected".into();
        assert_eq!(check_entry(&changed, 1, &a.entry_hash), Err(ChainBreak::ContentChanged { seq: 2 }));
        // b directly after genesis: a was deleted.
        assert_eq!(check_entry(&b, 0, GENESIS_HASH), Err(ChainBreak::BrokenLink { seq: 2 }));
        let c = entry(3, &a.entry_hash);
        assert_eq!(check_entry(&c, 1, &a.entry_hash), Err(ChainBreak::SequenceGap { previous: 1, found: 3 }));
    }
}
