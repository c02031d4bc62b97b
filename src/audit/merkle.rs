//! RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and proof verification.
//!
//! Leaves are SHA-256(0x00 ‖ entry), interior nodes SHA-256(0x01 ‖ left ‖ right), and a tree of
//! n leaves splits at k, the largest power of two below n (RFC 9162 §2.1.1). Every range this
//! module asks for is a union of *perfect aligned subtrees* (2^l leaves starting at a multiple of
//! 2^l), which the log stores as `(level, index)` nodes, so any root or proof costs O(log n)
//! stored hashes.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A perfect aligned subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

fn highest_power_of_two_at_most(n: u64) -> u64 {
    debug_assert!(n > 0);
    1 << (63 - n.leading_zeros())
}

/// The largest power of two strictly smaller than `n` (n ≥ 2), RFC 9162's split point.
fn split(n: u64) -> u64 {
    highest_power_of_two_at_most(n - 1)
}

/// The perfect subtrees whose hashes, folded from the right with [`node_hash`], give the
/// Merkle tree hash of leaves `[start, end)`. Left to right, largest first.
pub fn perfect_parts(start: u64, end: u64) -> Vec<NodeId> {
    let mut parts = Vec::new();
    let (mut at, mut remaining) = (start, end - start);
    while remaining > 0 {
        let size = highest_power_of_two_at_most(remaining);
        debug_assert_eq!(at % size, 0, "RFC 9162 ranges are aligned");
        parts.push(NodeId { level: size.trailing_zeros(), index: at / size });
        at += size;
        remaining -= size;
    }
    parts
}

/// Folds the hashes of [`perfect_parts`] into the range's Merkle tree hash.
pub fn fold_parts(hashes: &[Hash]) -> Hash {
    let (last, rest) = hashes.split_last().expect("a range has at least one part");
    rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc))
}

/// The ranges whose hashes form the inclusion proof of leaf `m` in a tree of `n` leaves
/// (RFC 9162 §2.1.3.1), in proof order (leaf to root).
pub fn inclusion_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    assert!(m < n, "leaf {m} is not in a tree of {n}");
    let mut out = Vec::new();
    let (mut start, mut end, mut m) = (0u64, n, m);
    // Descend from the root, then reverse: PATH lists the deepest sibling first.
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    out.reverse();
    out
}

/// The ranges whose hashes form the consistency proof between tree sizes `m` and `n`
/// (RFC 9162 §2.1.4.1, SUBPROOF), in proof order.
pub fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    assert!(0 < m && m <= n, "no consistency proof from {m} to {n}");
    let mut out = Vec::new();
    let (mut start, mut end, mut m, mut complete) = (0u64, n, m, true);
    loop {
        let size = end - start;
        if m == size {
            if !complete {
                out.push((start, end));
            }
            break;
        }
        let k = split(size);
        if m <= k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
            m -= k;
            complete = false;
        }
    }
    out.reverse();
    out
}

/// RFC 9162 §2.1.3.2: does `proof` show leaf `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `size2` with `root2` extends the tree
/// of `size1` with `root1`?
pub fn verify_consistency(size1: u64, size2: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) -> bool {
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 || size1 > size2 || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *root1 && sr == *root2 && snode == 0
}

/// Adds leaf number `leaf_index` to a tree whose right edge is `frontier` (its perfect
/// subtrees, largest first, as [`perfect_parts`] of the current size). Returns every node the
/// leaf creates: the leaf itself and each subtree it completes.
pub fn push_leaf(frontier: &mut Vec<(NodeId, Hash)>, leaf_index: u64, leaf: Hash) -> Vec<(NodeId, Hash)> {
    let mut carry = (NodeId { level: 0, index: leaf_index }, leaf);
    let mut created = vec![carry];
    while frontier.last().is_some_and(|(id, _)| id.level == carry.0.level) {
        let (_, left) = frontier.pop().expect("checked");
        carry = (NodeId { level: carry.0.level + 1, index: carry.0.index / 2 }, node_hash(&left, &carry.1));
        created.push(carry);
    }
    frontier.push(carry);
    created
}

/// The root of the tree whose right edge is `frontier`.
pub fn frontier_root(frontier: &[(NodeId, Hash)]) -> Hash {
    if frontier.is_empty() {
        return empty_root();
    }
    fold_parts(&frontier.iter().map(|(_, h)| *h).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// RFC 9162's recursive MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
    }

    /// Every perfect aligned subtree of `leaves`, as the log stores them.
    fn nodes(leaves: &[Hash]) -> HashMap<NodeId, Hash> {
        let mut map = HashMap::new();
        let mut level_hashes = leaves.to_vec();
        let mut level = 0;
        while !level_hashes.is_empty() {
            for (i, h) in level_hashes.iter().enumerate() {
                map.insert(NodeId { level, index: i as u64 }, *h);
            }
            level_hashes = level_hashes.chunks(2).filter(|c| c.len() == 2).map(|c| node_hash(&c[0], &c[1])).collect();
            level += 1;
        }
        map
    }

    fn range_hash(map: &HashMap<NodeId, Hash>, (start, end): (u64, u64)) -> Hash {
        let parts: Vec<Hash> = perfect_parts(start, end).iter().map(|id| map[id]).collect();
        fold_parts(&parts)
    }

    #[test]
    fn roots_from_stored_subtrees_and_from_the_frontier_equal_the_rfc_definition() {
        for n in 1..=70u64 {
            let l = leaves(n);
            let map = nodes(&l);
            assert_eq!(range_hash(&map, (0, n)), mth(&l), "size {n}");
            let mut frontier = Vec::new();
            let mut created = HashMap::new();
            for (i, h) in l.iter().enumerate() {
                created.extend(push_leaf(&mut frontier, i as u64, *h));
            }
            assert_eq!(frontier_root(&frontier), mth(&l), "frontier size {n}");
            assert_eq!(created, map, "push_leaf creates exactly the perfect subtrees, size {n}");
        }
        assert_eq!(frontier_root(&[]), empty_root());
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_and_fail_when_altered() {
        for n in 1..=40u64 {
            let l = leaves(n);
            let map = nodes(&l);
            let root = mth(&l);
            for m in 0..n {
                let proof: Vec<Hash> = inclusion_ranges(m, n).into_iter().map(|r| range_hash(&map, r)).collect();
                assert!(verify_inclusion(m, n, &l[m as usize], &proof, &root), "leaf {m} of {n}");
                assert!(!verify_inclusion(m, n, &leaf_hash(b"other"), &proof, &root));
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(m, n, &l[m as usize], &bad, &root));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_between_every_pair_of_sizes() {
        let l = leaves(40);
        let map = nodes(&l);
        for n in 1..=40u64 {
            for m in 1..=n {
                let proof: Vec<Hash> = consistency_ranges(m, n).into_iter().map(|r| range_hash(&map, r)).collect();
                let (r1, r2) = (mth(&l[..m as usize]), mth(&l[..n as usize]));
                assert!(verify_consistency(m, n, &r1, &r2, &proof), "{m} -> {n}");
                if m < n {
                    assert!(!verify_consistency(m, n, &leaf_hash(b"forged"), &r2, &proof), "{m} -> {n} forged");
                }
            }
        }
    }
}
