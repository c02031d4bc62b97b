//! Offline verification of the audit chain (`radsight audit verify`).
//!
//! Recomputes every entry's hash from its stored columns and checks the links. A changed row
//! fails its own hash; a deleted or inserted row breaks the sequence or the next link; swapped
//! rows break the links. What the chain alone cannot show is a truncation of the newest entries
//! or a wholesale rewrite: that needs checkpoints kept outside the database (see ARCHITECTURE.md).

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Canonical, GENESIS_HASH};
use crate::store::entities::audit_entry;

/// The first place the chain does not hold.
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
    /// The newest entry's hash: record it somewhere else to detect a later rewrite.
    pub head_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not read the audit trail")]
    Read(#[from] DbErr),
    #[error("the audit trail is not intact: {0}")]
    Broken(ChainBreak),
}

/// Walks the whole chain in sequence order, a page at a time.
pub async fn verify_chain(db: &DatabaseConnection) -> Result<ChainReport, VerifyError> {
    const PAGE: u64 = 1000;
    let (mut previous_seq, mut previous_hash, mut count) = (0i64, GENESIS_HASH.to_owned(), 0u64);
    loop {
        let page = audit_entry::Entity::find()
            .filter(audit_entry::Column::Seq.gt(previous_seq))
            .order_by_asc(audit_entry::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        if page.is_empty() {
            return Ok(ChainReport { entries: count, head_hash: previous_hash });
        }
        for entry in &page {
            check_entry(entry, previous_seq, &previous_hash).map_err(VerifyError::Broken)?;
            previous_seq = entry.seq;
            previous_hash = entry.entry_hash.clone();
            count += 1;
        }
    }
}

fn check_entry(entry: &audit_entry::Model, previous_seq: i64, previous_hash: &str) -> Result<(), ChainBreak> {
    if entry.format_version != super::FORMAT_VERSION {
        return Err(ChainBreak::UnknownFormat { seq: entry.seq, version: entry.format_version });
    }
    if Canonical::of(entry).hash() != entry.entry_hash {
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
