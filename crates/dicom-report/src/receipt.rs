//! The audit-log receipt as SR content a third party can read and check without radsight.
//!
//! RFC 9162 §2.1.3: the leaf hash is SHA-256(0x00 ‖ entry) and the proof hashes climb from the
//! leaf to the root of a tree of `tree_size` leaves; the C2SP signed note (checkpoint) carries
//! that root, the size and the log's signature. Every piece is one TEXT item, verbatim, so that
//! the checker needs only the SR: decode the entry, hash it, fold the proof, compare with the
//! checkpoint's root, check the note's signature with the log's published key.

use crate::codes;
use crate::content::{ContentItem, Relationship};
use crate::error::WriteError;
use crate::model::Receipt;
use crate::values::{Check, TextVr};

/// Checks the receipt: every item is a TEXT (UT); only the checkpoint note may span lines.
pub(crate) fn check_receipt(check: &Check, receipt: &Receipt) -> Result<(), WriteError> {
    if receipt.leaf_index >= receipt.tree_size {
        return Err(check.fail("receipt.leaf_index", "is not below receipt.tree_size"));
    }
    let mut single_lines =
        vec![("receipt.entry_base64".to_owned(), &receipt.entry_base64), ("receipt.log_origin".to_owned(), &receipt.log_origin)];
    single_lines.extend(receipt.proof_base64.iter().enumerate().map(|(i, hash)| (format!("receipt.proof_base64[{i}]"), hash)));
    for (field, value) in single_lines {
        check.non_empty_text(&field, value, TextVr::Ut)?;
        if value.contains(['\r', '\n']) {
            return Err(check.fail(field, "holds a line break"));
        }
    }
    check.non_empty_text("receipt.checkpoint", &receipt.checkpoint, TextVr::Ut)
}

/// CONTAINER (RS-RECEIPT, 99RADSIGHT): leaf index, tree size, entry, each proof hash in order,
/// the checkpoint note and the log origin, each a TEXT item.
pub(crate) fn receipt_container(receipt: &Receipt) -> ContentItem {
    let text = |name, value: &str| ContentItem::text(Relationship::Contains, name, value);
    let mut children = vec![
        text(codes::leaf_index(), &receipt.leaf_index.to_string()),
        text(codes::tree_size(), &receipt.tree_size.to_string()),
        text(codes::log_entry(), &receipt.entry_base64),
    ];
    children.extend(receipt.proof_base64.iter().map(|hash| text(codes::proof_hash(), hash)));
    children.push(text(codes::checkpoint(), &receipt.checkpoint));
    children.push(text(codes::log_origin(), &receipt.log_origin));
    ContentItem::container(Relationship::Contains, codes::log_receipt(), children)
}
