//! The cards hook calls served, read back: for the feedback endpoint (does this card exist, who
//! was it shown to), the SMART app (which cards showed this result) and the tests; and the card
//! uuids a hook call's audit entry stands for, for auditors.
//!
//! A call that serves cards is stored as one `hook_calls` row keyed by its audit entry, whose
//! own fields hold the call's facts (client, user, patient, service, hook instance, number of
//! cards): the row adds only the patient (indexed, for the app) and the digest of its
//! `card_sets` row, the ordered list of the content hashes it served (contents in
//! `card_contents`, each stored once however often served, with its origin). Its cards have no
//! rows: card `i` of a call is served as [`card_uuid`]`(seq, token, i)`, a version-4-shaped
//! uuid that carries the entry's sequence number (48 bits), a token of 58 bits taken from the
//! entry's own hash ([`token_of`]) and `i + 1` (16 bits). So
//! - a card uuid names its call's entry and its place on the call;
//! - the entry alone gives every uuid it served ([`uuids_served`]), offline, for an auditor;
//! - a uuid made up without reading the log fails on the token.
//!
//! Cards served before `m20261203_000010` each kept a `cards` row; they are read as they are.

use std::collections::{HashMap, HashSet};

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;
use uuid::Uuid;

use super::entities::{audit_entry, card, card_content, card_set, hook_call};

/// The most cards one call can serve: the index + 1 must fit in the uuid's low 16 bits.
pub const MAX_CARDS_PER_CALL: usize = 0xFFFF;
/// Sequence numbers a card uuid can carry (48 bits: 2.8 × 10^14 audit entries).
pub const MAX_SEQ: i64 = (1 << 48) - 1;
const TOKEN_BITS: u32 = 58;
const LOW46: u128 = (1 << 46) - 1;

/// The token of the card uuids an entry stands for: the first 58 bits of its `entry_hash`.
pub fn token_of(entry_hash: &str) -> Option<i64> {
    let first = u64::from_str_radix(entry_hash.get(..16)?, 16).ok()?;
    Some((first >> (64 - TOKEN_BITS)) as i64)
}

/// The card uuids a hook call's audit entry stands for, in the order served: none for another
/// action or a call that served no card.
pub fn uuids_served(entry: &audit_entry::Model) -> Vec<Uuid> {
    if entry.action != HOOK_CALL_ACTION || !(0..=MAX_SEQ).contains(&entry.seq) {
        return Vec::new();
    }
    match token_of(&entry.entry_hash) {
        Some(token) => (0..cards_in(entry).min(MAX_CARDS_PER_CALL)).map(|i| card_uuid(entry.seq, token, i)).collect(),
        None => Vec::new(),
    }
}

/// Whether `card_uuid` is one of the cards `entry` stands for (see [`uuids_served`]).
pub fn entry_served(entry: &audit_entry::Model, card_uuid: &str) -> bool {
    call_of(card_uuid).is_some_and(|c| {
        c.seq == entry.seq && entry.action == HOOK_CALL_ACTION && token_of(&entry.entry_hash) == Some(c.token) && c.index < cards_in(entry)
    })
}

/// How many cards a hook call's entry records it served (its `cards` detail; 0 if none).
fn cards_in(entry: &audit_entry::Model) -> usize {
    serde_json::from_str::<Value>(&entry.detail).ok().and_then(|d| d.get("cards")?.as_u64()).unwrap_or(0) as usize
}

/// The action code of a hook call's entry (`audit::Action::HookCall`), which the store reads
/// without depending on the audit module.
const HOOK_CALL_ACTION: &str = "cds.hook";

/// Where a card uuid points: its call's audit entry, the call's token, its place on the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardRef {
    pub seq: i64,
    pub token: i64,
    pub index: usize,
}

/// The uuid of the card at `index` of the call audited as `seq` with `token`.
///
/// Layout, most significant first: seq (48 bits), version 4 (4), token's top 12 bits, variant
/// `10` (2), token's low 46 bits, `index + 1` (16).
pub fn card_uuid(seq: i64, token: i64, index: usize) -> Uuid {
    assert!((0..=MAX_SEQ).contains(&seq), "sequence number {seq} does not fit a card uuid");
    assert!(index < MAX_CARDS_PER_CALL, "a call serves at most {MAX_CARDS_PER_CALL} cards");
    let t = token as u128 & ((1 << TOKEN_BITS) - 1);
    Uuid::from_u128((seq as u128) << 80 | 0x4 << 76 | (t >> 46) << 64 | 0b10 << 62 | (t & LOW46) << 16 | (index as u128 + 1))
}

/// What a card uuid points at; `None` if it cannot be a call's card.
pub fn call_of(card_uuid: &str) -> Option<CardRef> {
    let u = Uuid::try_parse(card_uuid).ok()?.as_u128();
    let (version, variant, low) = ((u >> 76) & 0xF, (u >> 62) & 0b11, (u & 0xFFFF) as usize);
    if version != 4 || variant != 0b10 || low == 0 {
        return None;
    }
    let token = ((u >> 64) & 0xFFF) << 46 | (u >> 16) & LOW46;
    Some(CardRef { seq: (u >> 80) as i64, token: token as i64, index: low - 1 })
}

/// One served card: its call's facts and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCard {
    pub uuid: String,
    /// The audit entry of the call that served it.
    pub audit_seq: i64,
    pub service_id: String,
    pub hook: String,
    pub hook_instance: String,
    pub client_iss: String,
    pub user_ref: Option<String>,
    pub patient_ref: String,
    pub source_kind: String,
    pub source_id: String,
    pub source_version: String,
    /// The hash of its content in `card_contents`; `None` for a card stored whole in `cards`.
    pub content_hash: Option<String>,
    pub created_at: i64,
}

impl ServedCard {
    fn from_row(c: card::Model) -> ServedCard {
        ServedCard {
            uuid: c.uuid,
            audit_seq: c.audit_seq,
            service_id: c.service_id,
            hook: c.hook,
            hook_instance: c.hook_instance,
            client_iss: c.client_iss,
            user_ref: c.user_ref,
            patient_ref: c.patient_ref,
            source_kind: c.source_kind,
            source_id: c.source_id,
            source_version: c.source_version,
            content_hash: c.content_hash,
            created_at: c.created_at,
        }
    }
}

/// The cards with these uuids that exist, in no particular order.
pub async fn by_uuids<C: ConnectionTrait>(db: &C, uuids: &[String]) -> Result<Vec<ServedCard>, DbErr> {
    let mut found: Vec<ServedCard> = card::Entity::find()
        .filter(card::Column::Uuid.is_in(uuids.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(ServedCard::from_row)
        .collect();
    let wanted: Vec<CardRef> = uuids.iter().filter(|u| !found.iter().any(|c| &c.uuid == *u)).filter_map(|u| call_of(u)).collect();
    if !wanted.is_empty() {
        let seqs: HashSet<i64> = wanted.iter().map(|w| w.seq).collect();
        let calls = hook_call::Entity::find().filter(hook_call::Column::AuditSeq.is_in(seqs)).all(db).await?;
        let calls = calls
            .into_iter()
            .map(|call| {
                let claims = wanted.iter().filter(|w| w.seq == call.audit_seq).map(|w| (w.index, w.token)).collect();
                (call, claims)
            })
            .collect();
        found.extend(expand(db, calls).await?);
    }
    Ok(found)
}

/// This patient's cards whose stored content contains `needle` (a result id, say), oldest first.
pub async fn for_patient_containing<C: ConnectionTrait>(db: &C, patient_ref: &str, needle: &str) -> Result<Vec<ServedCard>, DbErr> {
    let hashes: HashSet<String> = card_content::Entity::find()
        .filter(card_content::Column::ContentJson.contains(needle))
        .all(db)
        .await?
        .into_iter()
        .map(|c| c.hash)
        .collect();
    let mut found: Vec<ServedCard> = card::Entity::find()
        .filter(card::Column::PatientRef.eq(patient_ref))
        .filter(Condition::any().add(card::Column::ContentHash.is_in(hashes.iter().cloned())).add(card::Column::CardJson.contains(needle)))
        .all(db)
        .await?
        .into_iter()
        .map(ServedCard::from_row)
        .collect();
    if !hashes.is_empty() {
        let holding = hashes.iter().fold(Condition::any(), |c, h| c.add(card_set::Column::ContentHashes.contains(h.as_str())));
        let sets: Vec<String> = card_set::Entity::find().filter(holding).all(db).await?.into_iter().map(|s| s.digest).collect();
        let calls = hook_call::Entity::find()
            .filter(hook_call::Column::PatientRef.eq(patient_ref))
            .filter(hook_call::Column::CardSet.is_in(sets))
            .all(db)
            .await?;
        let calls = calls.into_iter().map(|c| (c, Vec::new())).collect();
        found.extend(expand(db, calls).await?.into_iter().filter(|c| c.content_hash.as_ref().is_some_and(|h| hashes.contains(h))));
    }
    found.sort_by_key(|c| (c.created_at, c.audit_seq));
    Ok(found)
}

/// Every served card, oldest first (for tests and small exports).
pub async fn all<C: ConnectionTrait>(db: &C) -> Result<Vec<ServedCard>, DbErr> {
    let mut found: Vec<ServedCard> = card::Entity::find().all(db).await?.into_iter().map(ServedCard::from_row).collect();
    let calls = hook_call::Entity::find().order_by_asc(hook_call::Column::AuditSeq).all(db).await?;
    let calls = calls.into_iter().map(|c| (c, Vec::new())).collect();
    found.extend(expand(db, calls).await?);
    found.sort_by_key(|c| (c.created_at, c.audit_seq));
    Ok(found)
}

/// Places on a call that a card uuid claims, each with the token it claims.
type Claims = Vec<(usize, i64)>;

/// The cards of each call, with the call's facts from its audit entry and each card's origin
/// from its content: every card of a call given no claims, else only the claimed places that
/// exist (within the call's list, and with the entry's token).
async fn expand<C: ConnectionTrait>(db: &C, calls: Vec<(hook_call::Model, Claims)>) -> Result<Vec<ServedCard>, DbErr> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let digests: HashSet<&str> = calls.iter().map(|(c, _)| c.card_set.as_str()).collect();
    let sets: HashMap<String, Vec<String>> = card_set::Entity::find()
        .filter(card_set::Column::Digest.is_in(digests.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|s| (s.digest, s.content_hashes.split('\n').map(str::to_owned).collect()))
        .collect();
    let hashes: HashSet<&str> = sets.values().flatten().map(String::as_str).collect();
    let origins: HashMap<String, [String; 3]> = card_content::Entity::find()
        .filter(card_content::Column::Hash.is_in(hashes.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.hash, [c.source_kind.unwrap_or_default(), c.source_id.unwrap_or_default(), c.source_version.unwrap_or_default()]))
        .collect();
    let entries: HashMap<i64, CallFacts> = audit_entry::Entity::find()
        .filter(audit_entry::Column::Seq.is_in(calls.iter().map(|(c, _)| c.audit_seq)))
        .all(db)
        .await?
        .into_iter()
        .map(|e| (e.seq, CallFacts::of(e)))
        .collect();
    let mut cards = Vec::new();
    for (call, claims) in calls {
        let missing = |what: &str| DbErr::RecordNotFound(format!("{what} of the hook call audited as {}", call.audit_seq));
        let set = sets.get(&call.card_set).ok_or_else(|| missing("the card list"))?;
        let facts = entries.get(&call.audit_seq).ok_or_else(|| missing("the audit entry"))?;
        let places: Vec<usize> = if claims.is_empty() {
            (0..set.len()).collect()
        } else {
            claims.into_iter().filter(|&(i, token)| i < set.len() && Some(token) == facts.token).map(|(i, _)| i).collect()
        };
        let Some(token) = facts.token else { return Err(missing("the hash")) };
        for i in places {
            let hash = &set[i];
            let [kind, id, version] = origins.get(hash).cloned().unwrap_or_default();
            cards.push(ServedCard {
                uuid: card_uuid(call.audit_seq, token, i).to_string(),
                audit_seq: call.audit_seq,
                service_id: facts.service_id.clone(),
                hook: facts.hook.clone(),
                hook_instance: facts.hook_instance.clone(),
                client_iss: facts.client_iss.clone(),
                user_ref: facts.user_ref.clone(),
                patient_ref: call.patient_ref.clone(),
                source_kind: kind,
                source_id: id,
                source_version: version,
                content_hash: Some(hash.clone()),
                created_at: call.created_at,
            });
        }
    }
    Ok(cards)
}

/// A hook call's facts as its audit entry records them (`cds_hooks::hooks::store_and_audit`).
struct CallFacts {
    token: Option<i64>,
    service_id: String,
    hook: String,
    hook_instance: String,
    client_iss: String,
    user_ref: Option<String>,
}

impl CallFacts {
    fn of(entry: audit_entry::Model) -> CallFacts {
        let entities: Vec<Value> = serde_json::from_str(&entry.entities).unwrap_or_default();
        let detail: Value = serde_json::from_str(&entry.detail).unwrap_or_default();
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        CallFacts {
            token: token_of(&entry.entry_hash),
            service_id: text(entities.iter().find(|e| e["kind"] == "CdsService").map(|e| &e["id"])),
            hook: text(detail.get("hook")),
            hook_instance: text(detail.get("hook_instance")),
            client_iss: entry.actor_iss.unwrap_or_default(),
            user_ref: entry.actor_user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "8ab75853533cfc161e44251fb3711b154ae41375b964d31219ff6dbd3956a7f2";

    #[test]
    fn a_card_uuid_names_its_call_and_place() {
        let token = token_of(HASH).unwrap();
        assert_eq!(token, (0x8ab75853533cfc16u64 >> 6) as i64, "the hash's first 58 bits");
        for seq in [1, 4_242, MAX_SEQ] {
            for i in [0, 1, 5, MAX_CARDS_PER_CALL - 1] {
                let u = card_uuid(seq, token, i);
                assert_eq!(u.get_version_num(), 4, "a well-formed version-4 uuid");
                assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
                assert_eq!(call_of(&u.to_string()), Some(CardRef { seq, token, index: i }));
                assert_eq!(call_of(&u.to_string().to_uppercase()), Some(CardRef { seq, token, index: i }), "an EHR may upper-case it");
            }
        }
        assert_ne!(card_uuid(7, token, 0), card_uuid(7, token, 1));
        assert_ne!(card_uuid(7, token, 0), card_uuid(8, token, 0));
        assert_ne!(card_uuid(7, token, 0), card_uuid(7, token ^ 1, 0));
        assert_ne!(card_uuid(7, token, 0), card_uuid(7, token ^ (1 << 57), 0), "the token's top bits count too");
    }

    fn entry(seq: i64, action: &str, cards: u64) -> audit_entry::Model {
        audit_entry::Model {
            seq,
            format_version: 1,
            recorded_at: String::new(),
            action: action.into(),
            outcome: "success".into(),
            actor_iss: None,
            actor_user: None,
            patient_ref: None,
            entities: "[]".into(),
            detail: format!("{{\"cards\":{cards}}}"),
            prev_hash: String::new(),
            entry_hash: HASH.into(),
        }
    }

    #[test]
    fn a_hook_entry_alone_gives_the_uuids_it_served() {
        let hook = entry(12, "cds.hook", 3);
        let served = uuids_served(&hook);
        assert_eq!(served.len(), 3);
        for (i, u) in served.iter().enumerate() {
            assert_eq!(call_of(&u.to_string()).map(|c| (c.seq, c.index)), Some((12, i)));
            assert!(entry_served(&hook, &u.to_string()));
        }
        assert!(!entry_served(&hook, &card_uuid(12, token_of(HASH).unwrap(), 3).to_string()), "past the last card");
        assert!(!entry_served(&hook, &card_uuid(12, token_of(HASH).unwrap() ^ 1, 0).to_string()), "another token");
        assert!(!entry_served(&entry(13, "cds.hook", 3), &served[0].to_string()), "another entry");
        assert!(uuids_served(&entry(12, "cds.feedback", 3)).is_empty());
        assert!(!entry_served(&entry(12, "cds.feedback", 3), &served[0].to_string()));
        assert!(uuids_served(&entry(12, "cds.hook", 0)).is_empty());
        assert_eq!(token_of("short"), None);
        assert_eq!(token_of("zz75853533cfc161e44251fb"), None);
    }

    #[test]
    fn what_cannot_be_a_card_of_a_call_is_not_one() {
        assert_eq!(call_of("not-a-uuid"), None);
        let u = card_uuid(3, token_of(HASH).unwrap(), 0).as_u128();
        assert_eq!(call_of(&Uuid::from_u128(u & !0xFFFF).to_string()), None, "index bits zero");
        assert_eq!(call_of(&Uuid::from_u128(u & !(0xF << 76) | 0x1 << 76).to_string()), None, "another version");
        assert_eq!(call_of(&Uuid::from_u128(u | 0b11 << 62).to_string()), None, "another variant");
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_sequence_number_past_48_bits_is_refused() {
        card_uuid(MAX_SEQ + 1, 0, 0);
    }
}
