//! Exporting audit entries for compliance auditors: a FHIR R4 `Bundle` of `AuditEvent`s shaped
//! after IHE Basic Audit Log Patterns (BALP), JSON Lines, or CSV.
//!
//! Every exported event names its position in the Merkle log (leaf index and leaf hash), so an
//! auditor can ask for an inclusion proof of exactly that event.

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Canonical;
use super::merkle::leaf_hash;
use super::tree::to_hex;
use crate::store::entities::audit_entry;
use crate::store::served_cards;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Fhir,
    Jsonl,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "fhir" => Some(Format::Fhir),
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Fhir => "application/fhir+json",
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv",
        }
    }
}

/// Which entries to export; every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// `Patient/<id>` (a bare id is accepted).
    pub patient: Option<String>,
    /// A client `iss` or a user reference.
    pub actor: Option<String>,
    /// An action code such as `cds.hook`.
    pub action: Option<String>,
    /// A model id, matched in the entry's entities and details.
    pub model: Option<String>,
    /// An entity id (a card uuid, a study UID, ...): the story of one thing.
    pub entity: Option<String>,
}

impl Filter {
    fn keeps(&self, e: &audit_entry::Model) -> bool {
        let at = OffsetDateTime::parse(&e.recorded_at, &Rfc3339).ok();
        self.from.is_none_or(|f| at.is_some_and(|t| t >= f))
            && self.to.is_none_or(|t| at.is_some_and(|a| a < t))
            && self.model.as_ref().is_none_or(|m| e.entities.contains(m.as_str()) || e.detail.contains(m.as_str()))
            && self.entity.as_ref().is_none_or(|id| {
                // A hook call's entry names its cards by the uuids it stands for, not in its
                // entities (`store::served_cards`).
                e.entities.contains(&format!("\"id\":{}", serde_json::Value::from(id.as_str()))) || served_cards::entry_served(e, id)
            })
    }
}

/// The selected entries in log order. Database-side filters first, time and model after.
pub async fn select(db: &DatabaseConnection, filter: &Filter, limit: u64) -> Result<Vec<audit_entry::Model>, DbErr> {
    let mut q = audit_entry::Entity::find().order_by_asc(audit_entry::Column::Seq);
    if let Some(p) = &filter.patient {
        let p = if p.starts_with("Patient/") { p.clone() } else { format!("Patient/{p}") };
        q = q.filter(audit_entry::Column::PatientRef.eq(p));
    }
    if let Some(a) = &filter.actor {
        q = q.filter(audit_entry::Column::ActorIss.eq(a.as_str()).or(audit_entry::Column::ActorUser.eq(a.as_str())));
    }
    if let Some(a) = &filter.action {
        q = q.filter(audit_entry::Column::Action.eq(a.as_str()));
    }
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page = q.clone().filter(audit_entry::Column::Seq.gt(after)).limit(1000).all(db).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page.into_iter().filter(|e| filter.keeps(e)));
        if out.len() as u64 >= limit {
            out.truncate(limit as usize);
            break;
        }
    }
    Ok(out)
}

pub fn render(entries: &[audit_entry::Model], format: Format, origin: &str) -> String {
    match format {
        Format::Fhir => bundle(entries, origin).to_string(),
        Format::Jsonl => entries.iter().map(|e| json_line(e).to_string() + "\n").collect(),
        Format::Csv => csv(entries),
    }
}

fn leaf_hex(e: &audit_entry::Model) -> String {
    to_hex(&leaf_hash(&Canonical::of(e).bytes()))
}

fn json_line(e: &audit_entry::Model) -> Value {
    json!({
        "seq": e.seq,
        "leaf_index": e.seq - 1,
        "recorded_at": e.recorded_at,
        "action": e.action,
        "outcome": e.outcome,
        "actor_iss": e.actor_iss,
        "actor_user": e.actor_user,
        "patient_ref": e.patient_ref,
        "entities": serde_json::from_str::<Value>(&e.entities).unwrap_or(Value::Null),
        "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
        // Derived, not hashed: the card uuids a hook call's entry stands for.
        "cards_served": served_cards::uuids_served(e).iter().map(Uuid::to_string).collect::<Vec<_>>(),
        "entry_hash": e.entry_hash,
        "leaf_hash": leaf_hex(e),
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

fn csv(entries: &[audit_entry::Model]) -> String {
    let mut out =
        String::from("seq,leaf_index,recorded_at,action,outcome,actor_iss,actor_user,patient_ref,entities,detail,entry_hash,leaf_hash\n");
    for e in entries {
        let fields = [
            e.seq.to_string(),
            (e.seq - 1).to_string(),
            e.recorded_at.clone(),
            e.action.clone(),
            e.outcome.clone(),
            e.actor_iss.clone().unwrap_or_default(),
            e.actor_user.clone().unwrap_or_default(),
            e.patient_ref.clone().unwrap_or_default(),
            e.entities.clone(),
            e.detail.clone(),
            e.entry_hash.clone(),
            leaf_hex(e),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const ACTION_SYSTEM: &str = "urn:radsight:audit-action";

/// (type, subtypes, AuditEvent.action) for each radsight action.
fn classify(action: &str) -> (Value, Vec<Value>, &'static str) {
    let own = json!({"system": ACTION_SYSTEM, "code": action});
    let rest = json!({"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"});
    match action {
        "auth.reject" => (
            json!({"system": DCM, "code": "110114", "display": "User Authentication"}),
            vec![json!({"system": DCM, "code": "110122", "display": "Login"}), own],
            "E",
        ),
        "fhir.read" => (rest, vec![json!({"system": RESTFUL, "code": "search-type", "display": "search type"}), own], "R"),
        "cds.discovery" => (rest, vec![json!({"system": RESTFUL, "code": "read", "display": "read"}), own], "R"),
        "cds.feedback" | "result.feedback" => (rest, vec![json!({"system": RESTFUL, "code": "create", "display": "create"}), own], "C"),
        "patient.read" => (rest, vec![json!({"system": RESTFUL, "code": "read", "display": "read"}), own], "R"),
        "smart.launch" => (
            json!({"system": DCM, "code": "110114", "display": "User Authentication"}),
            vec![json!({"system": DCM, "code": "110122", "display": "Login"}), own],
            "E",
        ),
        "dicomweb.fetch" => (json!({"system": DCM, "code": "110107", "display": "Import"}), vec![own], "C"),
        "audit.export" => (json!({"system": DCM, "code": "110106", "display": "Export"}), vec![own], "R"),
        "audit.read" => (json!({"system": DCM, "code": "110112", "display": "Query"}), vec![own], "R"),
        _ => (json!({"system": DCM, "code": "110100", "display": "Application Activity"}), vec![own], "E"),
    }
}

fn outcome_code(outcome: &str) -> &'static str {
    match outcome {
        "success" => "0",
        "rejected" | "denied" => "4",
        _ => "8",
    }
}

/// One entry as a FHIR R4 AuditEvent.
pub fn audit_event(e: &audit_entry::Model, origin: &str) -> Value {
    let (kind, subtype, action) = classify(&e.action);
    let mut agents = Vec::new();
    if let Some(iss) = &e.actor_iss {
        agents.push(json!({
            "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": iss}},
            "requestor": e.actor_user.is_none(),
        }));
    }
    if let Some(user) = &e.actor_user {
        agents.push(json!({"who": {"reference": user}, "requestor": true}));
    }
    if agents.is_empty() {
        agents.push(json!({"who": {"display": "radsight"}, "requestor": false}));
    }
    let mut entities = Vec::new();
    if let Some(p) = &e.patient_ref {
        entities.push(json!({
            "what": {"reference": p},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    let listed: Vec<Value> = serde_json::from_str(&e.entities).unwrap_or_default();
    let listed =
        listed.iter().map(|ent| (ent["kind"].as_str().unwrap_or("Object").to_owned(), ent["id"].as_str().unwrap_or("").to_owned()));
    // A hook call's cards, whose uuids its entry stands for rather than lists.
    let served = served_cards::uuids_served(e).into_iter().map(|u| ("Card".to_owned(), u.to_string()));
    for (kind, id) in listed.chain(served) {
        entities.push(json!({
            "what": {"identifier": {"system": format!("urn:radsight:{kind}"), "value": id}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        }));
    }
    entities.push(json!({
        "what": {"identifier": {"system": format!("urn:radsight:audit-log:{origin}"), "value": (e.seq - 1).to_string()}},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "description": "Position of this event in the radsight Merkle audit log (leaf index)",
        "detail": [
            {"type": "leaf_hash", "valueString": leaf_hex(e)},
            {"type": "entry_hash", "valueString": e.entry_hash},
            {"type": "radsight_detail", "valueString": e.detail},
        ],
    }));
    json!({
        "resourceType": "AuditEvent",
        "id": format!("radsight-audit-{}", e.seq),
        "type": {"system": kind["system"], "code": kind["code"], "display": kind["display"]},
        "subtype": subtype,
        "action": action,
        "recorded": e.recorded_at,
        "outcome": outcome_code(&e.outcome),
        "agent": agents,
        "source": {
            "observer": {"display": format!("radsight ({origin})")},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    })
}

pub fn bundle(entries: &[audit_entry::Model], origin: &str) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": OffsetDateTime::now_utc().format(&Rfc3339).expect("UTC formats"),
        "entry": entries.iter().map(|e| json!({
            "fullUrl": format!("urn:radsight:audit-event:{}", e.seq),
            "resource": audit_event(e, origin),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
