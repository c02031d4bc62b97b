//! The Merkle tree over the audit entries, stored as perfect-subtree hashes in `audit_nodes`.
//!
//! Appending leaf n writes its leaf node and every perfect subtree it completes (one extra node
//! per append on average). Any root or proof then needs only O(log n) stored nodes, fetched in
//! one query.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::merkle::{self, Hash, NodeId};
use crate::store::entities::{audit_entry, audit_node};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("could not read or write the audit tree")]
    Db(#[from] DbErr),
    #[error("the audit tree has no node {level}/{index}: it is damaged or behind the entries")]
    MissingNode { level: u32, index: u64 },
    #[error("stored node {level}/{index} is not a SHA-256 hash")]
    BadNode { level: u32, index: u64 },
    #[error("tree size {size} is larger than the log ({entries} entries)")]
    BeyondLog { size: u64, entries: u64 },
}

/// A SHA-256 hash as 64 lowercase hex digits, on the stack.
///
/// Why not `hex::encode`: it builds its `String` a `char` at a time, and `audit verify` encodes
/// two hashes per entry; at a million entries that was about 7 % of its CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexHash([u8; 64]);

impl HexHash {
    /// The genesis hash: 64 zeros.
    pub const ZERO: Self = Self([b'0'; 64]);

    pub fn of(h: &Hash) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(h) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

pub fn to_hex(h: &Hash) -> String {
    HexHash::of(h).as_str().to_owned()
}

pub fn from_hex(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// Fetches stored nodes by id, all in one query.
pub async fn fetch_nodes<C: ConnectionTrait>(conn: &C, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, TreeError> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(200) {
        let mut cond = Condition::any();
        for id in chunk {
            cond = cond.add(audit_node::Column::Level.eq(id.level as i32).and(audit_node::Column::Idx.eq(id.index as i64)));
        }
        for row in audit_node::Entity::find().filter(cond).all(conn).await? {
            let id = NodeId { level: row.level as u32, index: row.idx as u64 };
            found.insert(id, from_hex(&row.hash).ok_or(TreeError::BadNode { level: id.level, index: id.index })?);
        }
    }
    match ids.iter().find(|id| !found.contains_key(id)) {
        Some(id) => Err(TreeError::MissingNode { level: id.level, index: id.index }),
        None => Ok(found),
    }
}

/// The hashes of the given ranges, resolved from stored nodes.
async fn range_hashes<C: ConnectionTrait>(conn: &C, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, TreeError> {
    let parts: Vec<Vec<NodeId>> = ranges.iter().map(|(s, e)| merkle::perfect_parts(*s, *e)).collect();
    let all: Vec<NodeId> = parts.iter().flatten().copied().collect();
    let nodes = fetch_nodes(conn, &all).await?;
    Ok(parts.iter().map(|p| merkle::fold_parts(&p.iter().map(|id| nodes[id]).collect::<Vec<_>>())).collect())
}

/// Number of leaves in the stored tree.
pub async fn leaf_count<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    let last = audit_node::Entity::find()
        .filter(audit_node::Column::Level.eq(0))
        .order_by_desc(audit_node::Column::Idx)
        .limit(1)
        .one(conn)
        .await?;
    Ok(last.map(|n| n.idx as u64 + 1).unwrap_or(0))
}

pub async fn root<C: ConnectionTrait>(conn: &C, size: u64) -> Result<Hash, TreeError> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    Ok(range_hashes(conn, &[(0, size)]).await?[0])
}

async fn check_size<C: ConnectionTrait>(conn: &C, size: u64) -> Result<(), TreeError> {
    let entries = leaf_count(conn).await?;
    if size > entries { Err(TreeError::BeyondLog { size, entries }) } else { Ok(()) }
}

pub async fn inclusion_proof<C: ConnectionTrait>(conn: &C, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), TreeError> {
    check_size(conn, size).await?;
    let leaf = fetch_nodes(conn, &[NodeId { level: 0, index }]).await?[&NodeId { level: 0, index }];
    Ok((leaf, range_hashes(conn, &merkle::inclusion_ranges(index, size)).await?))
}

pub async fn consistency_proof<C: ConnectionTrait>(conn: &C, from: u64, to: u64) -> Result<Vec<Hash>, TreeError> {
    check_size(conn, to).await?;
    range_hashes(conn, &merkle::consistency_ranges(from, to)).await
}

/// The right edge of the stored tree of `size` leaves (one node per set bit), largest first.
pub async fn load_frontier<C: ConnectionTrait>(conn: &C, size: u64) -> Result<Vec<(NodeId, Hash)>, TreeError> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let ids = merkle::perfect_parts(0, size);
    let nodes = fetch_nodes(conn, &ids).await?;
    Ok(ids.into_iter().map(|id| (id, nodes[&id])).collect())
}

pub async fn insert_nodes<C: ConnectionTrait>(conn: &C, nodes: &[(NodeId, Hash)]) -> Result<(), DbErr> {
    let rows = nodes.iter().map(|(id, h)| audit_node::ActiveModel {
        level: Set(id.level as i32),
        idx: Set(id.index as i64),
        hash: Set(to_hex(h)),
    });
    audit_node::Entity::insert_many(rows).exec_without_returning(conn).await?;
    Ok(())
}

/// Hashes entries that are not in the tree yet (entries written before the Merkle log existed)
/// into it. Call with the chain lock held (inside an `AuditTxn`).
pub async fn catch_up<C: ConnectionTrait>(conn: &C, entries: u64) -> Result<u64, TreeError> {
    let mut leaves = leaf_count(conn).await?;
    if leaves >= entries {
        return Ok(0);
    }
    let mut frontier = load_frontier(conn, leaves).await?;
    let mut added = 0;
    while leaves < entries {
        let page = audit_entry::Entity::find()
            .filter(audit_entry::Column::Seq.gt(leaves as i64))
            .order_by_asc(audit_entry::Column::Seq)
            .limit(1000)
            .all(conn)
            .await?;
        if page.is_empty() {
            break;
        }
        let mut nodes = Vec::new();
        for e in &page {
            let leaf = merkle::leaf_hash(&super::Canonical::of(e).bytes());
            nodes.extend(merkle::push_leaf(&mut frontier, leaves, leaf));
            leaves += 1;
            added += 1;
        }
        insert_nodes(conn, &nodes).await?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hashes_are_lowercase_digits_in_byte_order_and_zero_is_the_genesis_hash() {
        let mut h: Hash = [0; 32];
        h.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(37) ^ 0xa5);
        assert_eq!(HexHash::of(&h).as_str(), hex::encode(h));
        assert_eq!(to_hex(&[0xff; 32]), "f".repeat(64));
        assert_eq!(HexHash::ZERO.as_str(), crate::audit::GENESIS_HASH);
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
    }
}
