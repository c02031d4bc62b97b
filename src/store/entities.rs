//! sea-orm entities, one module per table created in `migrations/`.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod audit_entry {
    use sea_orm::entity::prelude::*;

    /// Deserialise from a JSON object or an array of the columns in declaration order (how `audit
    /// verify` reads a page).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
    #[sea_orm(table_name = "audit_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub format_version: i32,
        pub recorded_at: String,
        pub action: String,
        pub outcome: String,
        pub actor_iss: Option<String>,
        pub actor_user: Option<String>,
        pub patient_ref: Option<String>,
        pub entities: String,
        pub detail: String,
        pub prev_hash: String,
        pub entry_hash: String,
    }
    no_relations!();
}

pub mod card {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub uuid: String,
        pub hook_instance: String,
        pub service_id: String,
        pub hook: String,
        pub client_iss: String,
        pub user_ref: Option<String>,
        pub patient_ref: String,
        pub source_kind: String,
        pub source_id: String,
        pub source_version: String,
        pub indicator: String,
        pub summary: String,
        /// The whole card as served, for rows stored before card contents were shared
        /// (migration `m20261203_000009`); empty for rows with a `content_hash`. No rows are
        /// added since `m20261203_000010` (a call is one `hook_calls` row).
        pub card_json: String,
        pub audit_seq: i64,
        pub created_at: i64,
        /// The SHA-256 (hex) of the card's content in `card_contents`.
        pub content_hash: Option<String>,
    }
    no_relations!();
}

pub mod card_content {
    use sea_orm::entity::prelude::*;

    /// A card's content, stored once however often it is served: see
    /// `cds_hooks::stored_card`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "card_contents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        pub content_json: String,
        pub created_at: i64,
        /// The card's origin, which its hash covers: `rule`, `model` or `status`; its id; its
        /// version. Empty only for contents stored before `m20261203_000010` whose cards rows
        /// were gone (none are deleted, so none in practice).
        pub source_kind: Option<String>,
        pub source_id: Option<String>,
        pub source_version: Option<String>,
    }
    no_relations!();
}

pub mod hook_call {
    use sea_orm::entity::prelude::*;

    /// One hook call that served cards, keyed by its audit entry: see `store::served_cards`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "hook_calls")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub audit_seq: i64,
        pub patient_ref: String,
        /// The `card_sets` digest of what it served.
        pub card_set: String,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod card_set {
    use sea_orm::entity::prelude::*;

    /// The content hashes one or more calls served, in order, newline-separated; keyed by
    /// `cds_hooks::stored_card::served_digest` of them.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "card_sets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        pub content_hashes: String,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod feedback {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "feedback")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub card_uuid: String,
        pub service_id: String,
        pub client_iss: String,
        pub outcome: String,
        pub outcome_timestamp: String,
        pub accepted_suggestions: String,
        pub override_reason: Option<String>,
        pub audit_seq: i64,
        pub received_at: i64,
    }
    no_relations!();
}

pub mod client_jti {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "client_jti")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub iss: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub jti: String,
        pub expires_at: i64,
    }
    no_relations!();
}

pub mod study {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "studies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub study_uid: String,
        pub patient_ref: String,
        /// The namespace the patient id belongs to (an EHR's or an assigning authority's; see
        /// [`crate::domain::PatientNamespace`]). `None` on rows from before it was recorded:
        /// those match no reader.
        pub patient_namespace: Option<String>,
        pub accession: Option<String>,
        pub modality: String,
        pub body_site: Option<String>,
        pub procedure_code: Option<String>,
        pub description: Option<String>,
        pub started_at: Option<i64>,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod analysis_result {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "analysis_results")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub study_uid: String,
        /// pending | running | done | failed
        pub status: String,
        pub model_id: Option<String>,
        pub model_version: Option<String>,
        pub weights_sha256: Option<String>,
        /// JSON array of `{code, display, probability, threshold}`.
        pub findings: String,
        pub error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        /// The instance the model looked at, and the SHA-256 of its decoded pixel values.
        pub sop_instance_uid: Option<String>,
        pub series_uid: Option<String>,
        pub input_sha256: Option<String>,
        /// The SOP Class of that instance (the DICOM outputs reference it).
        pub sop_class_uid: Option<String>,
        /// `grad-cam` | `integrated-gradients` | `occlusion`.
        pub saliency_method: Option<String>,
        /// JSON: saliency parameters, peak and box in source pixel coordinates, letterbox.
        pub explanation: Option<String>,
        /// Deletion AUC of the saliency map, and of a random map on the same image.
        pub deletion_auc: Option<f64>,
        pub random_deletion_auc: Option<f64>,
        pub runtime_ms: Option<i64>,
        pub job_id: Option<String>,
        /// JSON snapshot of the model card's summary at inference time: intended use,
        /// limitations, validation metrics, so a result shows the card of the exact version.
        pub model_card: Option<String>,
    }
    no_relations!();
}

pub mod result_artefact {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "result_artefacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub result_id: String,
        /// `saliency-map` (little-endian f32 on the model's grid; on the source grid in rows
        /// from before 2026-12-03) | `saliency-png` (overlay for people) | `heatmap-png` (RGBA
        /// colour map, alpha from the map) | `image-png` (windowed); pictures on the display grid.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        pub media_type: String,
        pub width: i32,
        pub height: i32,
        pub sha256: String,
        pub bytes: Vec<u8>,
        pub created_at: i64,
    }
    no_relations!();
}

pub mod result_feedback {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "result_feedback")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub result_id: String,
        pub patient_ref: String,
        pub ehr_iss: String,
        /// The clinician's `fhirUser`, when the token named one.
        pub user_ref: Option<String>,
        /// `agree` | `disagree`.
        pub verdict: String,
        pub reason_code: Option<String>,
        pub comment: Option<String>,
        /// The card the clinician saw this result on, if any.
        pub card_uuid: Option<String>,
        pub audit_seq: i64,
        pub received_at: i64,
    }
    no_relations!();
}

pub mod audit_node {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_nodes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub level: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idx: i64,
        pub hash: String,
    }
    no_relations!();
}

pub mod audit_checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tree_size: i64,
        pub root_hash: String,
        /// The C2SP signed-note checkpoint, exactly as published.
        pub note: String,
        pub created_at: String,
    }
    no_relations!();
}

pub mod auditor_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auditor_sessions")]
    pub struct Model {
        /// SHA-256 (hex) of the cookie value; the value itself is never stored.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub iss: String,
        pub expires_at: i64,
    }
    no_relations!();
}

pub mod hl7_message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "hl7_messages")]
    pub struct Model {
        /// `MSH-3^MSH-4` of the sender: control ids are unique per sending system only.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sender: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub control_id: String,
        pub message_type: String,
        pub ack_code: String,
        pub job_id: Option<String>,
        pub received_at: i64,
        /// SHA-256 of the message without `MSH-7` ([`crate::hl7::ingest`]); `None` for rows
        /// stored before it was recorded.
        pub content_sha256: Option<String>,
    }
    no_relations!();
}

pub mod imaging_order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "imaging_orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub patient_ref: String,
        pub patient_namespace: Option<String>,
        pub placer_order: Option<String>,
        pub filler_order: Option<String>,
        pub accession: Option<String>,
        /// `OBR-4`: `system|code`.
        pub procedure_code: Option<String>,
        pub procedure_display: Option<String>,
        /// `ORC-1` (NW, CA, XO, SC, ...), or `RE` for a result.
        pub order_control: String,
        /// `OBR-25` (F final, C corrected, P preliminary, ...).
        pub result_status: Option<String>,
        pub study_uid: Option<String>,
        pub modality: Option<String>,
        pub last_control_id: String,
        pub created_at: i64,
        pub updated_at: i64,
    }
    no_relations!();
}

pub mod job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub study_uid: String,
        pub patient_ref: Option<String>,
        /// The DICOMweb root named by a FHIR notification (already allowlisted), if any.
        pub endpoint: Option<String>,
        /// `hl7` | `fhir`.
        pub source: String,
        /// queued | running | succeeded | dead
        pub state: String,
        /// The last step reached (`located`, `fetch-pending`, ...).
        pub stage: Option<String>,
        pub attempts: i32,
        pub max_attempts: i32,
        /// Unix milliseconds before which the job is not claimed.
        pub run_after: i64,
        pub lease_owner: Option<String>,
        /// Unix milliseconds; a running job whose lease has passed is claimed again.
        pub lease_until: Option<i64>,
        /// A stable error code, never free text from upstream.
        pub last_error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }
    no_relations!();
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// One delivery of a result to another system (see `crate::outbox`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub result_id: String,
        pub study_uid: String,
        /// `stow-sr` | `stow-sc` | `hl7-oru` | `fhir-bundle`
        pub kind: String,
        /// Where it goes: a DICOMweb root, a RIS destination's name or an EHR's FHIR base.
        pub destination: String,
        /// `pending` | `delivering` | `delivered` | `dead`
        pub state: String,
        pub attempts: i32,
        pub max_attempts: i32,
        /// Unix ms.
        pub run_after: i64,
        pub lease_owner: Option<String>,
        pub lease_until: Option<i64>,
        pub last_error: Option<String>,
        /// The id of the object built: its SOP Instance UID (PACS), its MSH-10 message control
        /// id (RIS) or its DiagnosticReport identifier (EHR). The column keeps its first name.
        #[sea_orm(column_name = "sop_instance_uid")]
        pub object_id: Option<String>,
        /// The object as first built: every retry sends these bytes.
        pub payload: Option<Vec<u8>>,
        pub created_at: i64,
        pub updated_at: i64,
        pub delivered_at: Option<i64>,
    }
    no_relations!();
}
