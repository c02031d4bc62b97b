//! Layered configuration: built-in defaults, then `radsight.toml` (or the file named by
//! `--config` / `RADSIGHT_CONFIG`), then `RADSIGHT_*` environment variables (nested keys with
//! `__`, e.g. `RADSIGHT_SERVER__PORT=9090`), then `DATABASE_URL`.
//!
//! Registered clients live here: each CDS client (or EHR) has an `iss`, the keys it signs with
//! (inline JWKS, a JWKS file, or allowlisted `jku` URLs) and the FHIR base URLs radsight may
//! call on its behalf. Nothing outside this list is ever fetched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::PatientNamespace;
use crate::imaging::procedure::CatalogEntry;

pub mod smart;

pub use smart::{DEFAULT_SCOPES, DemoEhrSettings, EhrSettings, SmartSettings, TokenValidation};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub hooks: HookSettings,
    pub rules: RuleSettings,
    pub audit: AuditSettings,
    pub hl7: Hl7Settings,
    pub jobs: JobSettings,
    pub dicomweb: DicomwebSettings,
    pub analysis: AnalysisSettings,
    /// Rate limits and how refusals by strangers are counted.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Where results go besides cards and the SMART app: the PACS, by STOW-RS.
    #[serde(default)]
    pub outputs: OutputSettings,
    /// The SMART on FHIR app: registered EHRs, token validation, the demo EHR.
    #[serde(default)]
    pub smart: SmartSettings,
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Auditor clients: they sign JWTs like CDS clients and need the `audit.read` scope. Their
    /// `fhir_servers` are unused. An `iss` may not be both a client and an auditor.
    #[serde(default)]
    pub auditors: Vec<ClientSettings>,
    /// Which EHRs and HL7 assigning authorities share patient ids. Without an entry, each
    /// EHR (`iss`) and each assigning authority is a namespace of its own, and nothing is
    /// shared between them.
    #[serde(default)]
    pub patient_namespaces: Vec<PatientNamespaceSettings>,
    /// Site additions to the imaging procedure catalog (`cds-hooks/procedures.json` ships the defaults).
    #[serde(default)]
    pub procedures: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// The base URL clients call, without a trailing slash. JWT `aud` must equal this plus the
    /// path called, so behind a proxy set it to the external URL. Empty means
    /// `http://{host}:{port}` of the bound socket.
    pub public_url: String,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// actix worker threads; 0 means one per core.
    pub workers: usize,
    /// On SIGTERM or SIGINT: how long in-flight hook calls, MLLP messages and jobs may take to
    /// finish before the process exits anyway. Default 20 s.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

fn default_shutdown_grace_secs() -> u64 {
    20
}

/// Rate limits (GCRA, per instance) and the counting of refusals. A limit of 0 is off.
///
/// Source addresses are the TCP peer's: behind a reverse proxy every request has the proxy's
/// address, so size `per_source_per_second` for the proxy (or turn it off and limit there).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per second from one source address, on every route but `/healthz` and
    /// `/readyz`; beyond it, 429 with `Retry-After` before any token is verified. Default 200.
    pub per_source_per_second: u32,
    /// Requests one source may send at once above its rate. Default 400.
    pub per_source_burst: u32,
    /// Requests per second from one authenticated CDS client. Default 200.
    pub per_client_per_second: u32,
    pub per_client_burst: u32,
    /// Studies one client may announce by FHIR notification per minute. Default 600.
    pub studies_per_client_per_minute: u32,
    /// Refusals before authentication (bad tokens, throttled requests, unknown HL7 senders)
    /// are audited one by one only for the first of each source and reason in a window; the
    /// rest are counted and written as one `refusal.summary` entry when the window closes.
    /// Default 60 s.
    pub refusal_window_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_source_per_second: 200,
            per_source_burst: 400,
            per_client_per_second: 200,
            per_client_burst: 400,
            studies_per_client_per_minute: 600,
            refusal_window_secs: 60,
        }
    }
}

/// Deliveries of results to other systems through the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSettings {
    /// DICOMweb roots each result is stored into by STOW-RS, as a TID 1500 SR and a Secondary
    /// Capture of its saliency overlay. Each must be in `dicomweb.endpoints` (or be the
    /// `default_endpoint`); credentials are those of `[[dicomweb.credentials]]`. Empty: none.
    pub pacs: Vec<String>,
    /// The organisation's UID root for the objects radsight writes (digits and dots, at most 43
    /// characters); empty: `2.25.` UUID-derived UIDs. UIDs derive from it and the result, so a
    /// retry writes the same instance.
    pub uid_root: String,
    /// Attempts before a delivery is `dead`. Default 8.
    pub max_attempts: i32,
    /// The wait after the first failure, doubling after each further one, up to the max.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How often the deliverer looks for due deliveries (new ones wake it at once).
    pub poll_interval_ms: u64,
    /// How long a delivery under way is owned before another instance may take it over.
    pub lease_ms: u64,
    /// RIS or interface-engine destinations: each result is sent as an HL7 v2.5.1 ORU^R01 over
    /// MLLP and counts as delivered only on an AA (or CA) acknowledgement.
    pub ris: Vec<RisDestination>,
    /// EHR FHIR servers: each result's Bundle is written as a FHIR transaction of conditional
    /// creates, authorised by SMART Backend Services with radsight's own key (`radsight keys
    /// rotate`).
    pub ehr: Vec<EhrDestination>,
    /// Where radsight's own signing keys live (a keyring written by `radsight keys rotate`;
    /// private keys mode 0600). Every instance needs the same keyring.
    pub keys_dir: PathBuf,
    /// How long a retired key stays in the published JWKS (`/.well-known/jwks.json`) after a
    /// rotation, so assertions it signed (which live five minutes) and servers' cached key sets
    /// stay valid. Default one hour.
    pub retired_key_publish_secs: u64,
}

impl OutputSettings {
    /// True when results go anywhere besides cards and the app.
    pub fn any(&self) -> bool {
        !(self.pacs.is_empty() && self.ris.is_empty() && self.ehr.is_empty())
    }

    pub fn ris_named(&self, name: &str) -> Option<&RisDestination> {
        self.ris.iter().find(|r| r.name == name)
    }

    pub fn ehr_at(&self, fhir_base: &str) -> Option<&EhrDestination> {
        self.ehr.iter().find(|e| e.fhir_base.trim_end_matches('/') == fhir_base.trim_end_matches('/'))
    }
}

/// An HL7 v2 destination for ORU^R01 results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RisDestination {
    /// Names the destination in the outbox and the audit trail; unique.
    pub name: String,
    /// `host:port` of its MLLP listener.
    pub address: String,
    /// MSH-5 and MSH-6.
    #[serde(default)]
    pub receiving_application: String,
    #[serde(default)]
    pub receiving_facility: String,
    /// The assigning authority of the patient ids this RIS knows (sent in PID-3.4). Its
    /// patient namespace (see `[[patient_namespaces]]`; else `MSH-5`'s facility's) must be the
    /// study's: a result is sent only to destinations of its own patient namespace, so no
    /// patient id is ever sent where it names someone else.
    #[serde(default)]
    pub assigning_authority: String,
    /// MSH-3 and MSH-4. Default `RADSIGHT` and empty.
    #[serde(default = "default_sending_application")]
    pub sending_application: String,
    #[serde(default)]
    pub sending_facility: String,
    /// MLLP over TLS to this destination; unset: plain TCP.
    #[serde(default)]
    pub tls: Option<RisTls>,
    /// How long to wait for the connection and then for the ACK; no ACK in time is a failed
    /// attempt, retried with the same message (same MSH-10) so the receiver can discard a
    /// duplicate. Default 30 s.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

/// TLS to a RIS: the CA its certificate must chain to, and radsight's client certificate when
/// the RIS asks for one (mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RisTls {
    /// PEM CA certificates the RIS's certificate must chain to.
    pub ca_file: PathBuf,
    /// radsight's PEM certificate chain and private key, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the RIS's certificate must carry; empty: the host of `address`.
    #[serde(default)]
    pub server_name: String,
}

fn default_sending_application() -> String {
    "RADSIGHT".into()
}

fn default_ack_timeout_ms() -> u64 {
    30_000
}

/// An EHR FHIR server results are written to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EhrDestination {
    /// The FHIR base URL (no trailing slash); names the destination in the outbox.
    pub fhir_base: String,
    /// radsight's client id at the EHR's authorisation server (registered there with the URL
    /// of radsight's JWKS, or its contents).
    pub client_id: String,
    /// The token endpoint; empty: the `token_endpoint` of `{fhir_base}/.well-known/smart-configuration`.
    #[serde(default)]
    pub token_url: String,
    /// Scopes asked for. Default: create on the four resource types written.
    #[serde(default = "default_ehr_scope")]
    pub scope: String,
    /// Timeout of each request to the EHR. Default 30 s.
    #[serde(default = "default_ack_timeout_ms")]
    pub timeout_ms: u64,
}

/// SMART v2 scopes for what the write-back creates.
pub const DEFAULT_EHR_SCOPE: &str = "system/DiagnosticReport.c system/Observation.c system/Device.c system/Provenance.cu";

fn default_ehr_scope() -> String {
    DEFAULT_EHR_SCOPE.into()
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings {
            pacs: Vec::new(),
            uid_root: String::new(),
            max_attempts: 8,
            backoff_base_ms: 30_000,
            backoff_max_ms: 3_600_000,
            poll_interval_ms: 2_000,
            lease_ms: 120_000,
            ris: Vec::new(),
            ehr: Vec::new(),
            keys_dir: PathBuf::from("data/keys"),
            retired_key_publish_secs: 3_600,
        }
    }
}

/// A patient namespace: the EHRs (CDS client `iss`, SMART EHR `iss`) and HL7 assigning
/// authorities (`PID-3.4`, else `MSH-4`) whose patient ids are the same ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PatientNamespaceSettings {
    pub name: String,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub hl7_authorities: Vec<String>,
}

/// An HL7 sender allowed by its `MSH-3` (sending application) and `MSH-4` (sending facility),
/// compared on their first components.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hl7Sender {
    pub application: String,
    pub facility: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Tokens whose `exp` lies further ahead are refused: this bounds how long a `jti` must be
    /// remembered (the spec asks for short-lived tokens; 5 minutes is usual).
    pub max_token_lifetime_secs: u64,
    /// Timeout for fetching a JWKS from an allowlisted `jku`.
    pub jwks_fetch_timeout_ms: u64,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_cache_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// How far back a prior study counts as relevant to an order or a chart view.
    pub lookback_days: i64,
    /// The SMART app's launch URL, put in cards' `smart` links. Empty means
    /// `{public_url}/smart/launch`.
    pub smart_launch_url: String,
    /// Timeout for each FHIR read made when prefetch is missing.
    pub fhir_timeout_ms: u64,
    /// Largest FHIR response accepted from an EHR.
    pub fhir_max_response_bytes: usize,
    /// Where the service definitions are read from; empty means the copy built into the binary.
    pub definitions_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Rule ids to switch off, e.g. `["missing-reason"]`.
    pub disabled: BTreeSet<String>,
    pub duplicate_window_days: i64,
    /// eGFR below this (mL/min/1.73m²) makes contrast a risk.
    pub egfr_threshold: f64,
    pub egfr_max_age_days: i64,
    /// LOINC codes accepted as eGFR results.
    pub egfr_loinc_codes: Vec<String>,
    pub pregnancy_max_age_days: i64,
    /// Codes (system|code) of allergies that count as contrast allergies, besides name matching.
    pub contrast_allergy_codes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The log's name: the checkpoint origin line and the signing key's name (a schema-less URL).
    pub origin: String,
    /// Ed25519 PKCS#8 PEM key that signs checkpoints; created on first start if missing.
    pub checkpoint_key_file: PathBuf,
    /// Where every checkpoint is also written, for auditors and witnesses to keep. Copy it off
    /// the machine: a checkpoint outside the database is what makes a rewrite detectable.
    pub checkpoint_dir: PathBuf,
    /// A checkpoint is signed this often when the log has grown; 0 turns the timer off.
    pub checkpoint_interval_secs: u64,
    /// How long entries are kept; at least 183 days (EU AI Act Art. 19). Nothing is deleted
    /// inside it.
    pub retention_days: u32,
    /// Writes waiting for the log's group commit beyond which a new one is refused at once (a
    /// hook answers 503 with `Retry-After`, an HL7 message AE), so that a slow disk never makes
    /// an EHR wait out its timeout. Refusals are counted into `refusal.summary`.
    pub max_pending: usize,
}

/// The HL7 v2 MLLP listener. Its limits follow the DICOM upper-layer listener's model: explicit
/// timeouts, a message size limit and a connection limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Settings {
    /// Off: `radsight serve` does not listen for HL7.
    pub enabled: bool,
    /// `host:port`; port 0 picks a free port (tests). Default `127.0.0.1:2575`.
    pub bind: String,
    /// A connection that sends nothing for this long is closed. Default 60 s.
    pub read_timeout_ms: u64,
    /// Larger messages are answered AR and skipped. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Connections beyond this are closed at once. Default 32.
    pub max_connections: usize,
    /// A message must arrive whole within this long of its start block (or of the first byte
    /// after the previous message), however slowly bytes trickle in; else the connection is
    /// closed. Default 30 s.
    #[serde(default = "default_message_deadline_ms")]
    pub message_deadline_ms: u64,
    /// Connections from one source address beyond this are closed at once, so one host cannot
    /// hold every slot. Default 8.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Source address ranges (CIDR) whose messages are read; a message from elsewhere is
    /// answered AR. Default: loopback only (`127.0.0.0/8`, `::1/128`).
    #[serde(default = "default_allowed_sources")]
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// Senders (`MSH-3`/`MSH-4`) whose messages are taken; any other gets AR. Empty: any sender
    /// from an allowed source.
    #[serde(default)]
    pub senders: Vec<Hl7Sender>,
    /// MLLP over TLS: when set, the listener speaks only TLS with these files.
    #[serde(default)]
    pub tls: Option<Hl7Tls>,
    /// Where a site puts the Study Instance UID, as an hl7-parser query (`OBR.20`,
    /// `OBX[2].5`); tried before `IPC-3`, `ZDS-1` and an OBX coded DCM 110180 or 113014. Empty: none.
    pub study_uid_field: String,
}

/// MLLP over TLS (rustls). With `client_ca_file`, a sender must present a certificate that
/// chains to it (mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Tls {
    /// PEM certificate chain of the listener.
    pub cert_file: PathBuf,
    /// PEM private key of the listener (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; unset: no client certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

fn default_allowed_sources() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"].iter().map(|n| n.parse().expect("a literal CIDR")).collect()
}

fn default_transfer_syntax() -> String {
    EXPLICIT_VR_LITTLE_ENDIAN.into()
}

/// The transfer syntax radsight asks a PACS for by default.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

fn default_max_studies_per_notification() -> usize {
    50
}

fn default_message_deadline_ms() -> u64 {
    30_000
}

fn default_max_connections_per_source() -> usize {
    8
}

/// The analysis job queue and its workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Worker tasks in this instance; 0 runs none (another instance does the work).
    pub workers: usize,
    /// Attempts before a job is `dead`.
    pub max_attempts: i32,
    /// The wait after the first failure; it doubles with each further failure.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a claimed job is owned; a job whose lease passed (its worker crashed) is
    /// claimed again. Must exceed the longest job.
    pub lease_ms: u64,
    /// How often an idle worker looks for work (enqueues in this instance wake it at once).
    pub poll_interval_ms: u64,
    /// A FHIR notification announcing more studies than this is refused whole (413), so one
    /// request cannot queue thousands of jobs. Default 50.
    #[serde(default = "default_max_studies_per_notification")]
    pub max_studies_per_notification: usize,
    /// Memory the analysis workers of one process share, in MiB: a job reserves what its
    /// largest image declares (16 bytes a sample, plus the retrieved bytes) before decoding, so
    /// two big studies wait for each other. Default 1024.
    #[serde(default = "default_memory_budget_mib")]
    pub memory_budget_mib: u64,
}

fn default_memory_budget_mib() -> u64 {
    1024
}

/// Decoding, models and results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSettings {
    /// The model registry: one folder per model with its card, weights and hash.
    pub models_dir: PathBuf,
    /// `grad-cam` (default), `integrated-gradients` or `occlusion`.
    pub saliency: String,
    /// How long a signed result link in a card stays valid.
    pub link_ttl_secs: i64,
    /// Which model runs on which study; the first matching route wins. Empty: each model
    /// card's own `applies_to`.
    #[serde(default)]
    pub routes: Vec<ModelRoute>,
    /// Untrusted-input limits, checked from the DICOM header before any pixel is allocated.
    pub max_rows: u32,
    pub max_columns: u32,
    pub max_frames: u32,
    pub max_pixel_bytes: u64,
}

/// A routing rule: empty lists match anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    #[serde(default)]
    pub modalities: Vec<String>,
    #[serde(default)]
    pub body_parts: Vec<String>,
    #[serde(default)]
    pub procedure_codes: Vec<String>,
    /// The model id to run.
    pub model: String,
}

/// DICOMweb (PACS) access.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomwebSettings {
    /// The DICOMweb roots radsight may call; an `ImagingStudy.endpoint` elsewhere is refused.
    pub endpoints: Vec<String>,
    /// The root used for studies announced without an endpoint (HL7); empty: none.
    pub default_endpoint: String,
    /// Timeout of each DICOMweb request.
    pub timeout_ms: u64,
    /// Which instances of a study are retrieved; empty lists select everything.
    #[serde(default)]
    pub select: SelectionRules,
    /// How radsight authenticates to each PACS that needs it (others get no credentials).
    #[serde(default)]
    pub credentials: Vec<PacsCredentials>,
    /// A study larger than this is not retrieved (the job is dead with `study-too-large`).
    /// Retrieval is held in memory, so keep it well below the machine's memory. Default 512 MiB.
    pub max_study_bytes: usize,
    /// The transfer syntax WADO-RS asks the PACS for first: a UID (default Explicit VR Little
    /// Endian, which every PACS that transcodes can give and radsight decodes fastest), or `*`
    /// for the stored syntax. A PACS that answers with an error status (it cannot transcode) is asked
    /// again with `*`.
    #[serde(default = "default_transfer_syntax")]
    pub transfer_syntax: String,
}

/// Which instances of a study are retrieved (`[dicomweb.select]`). An empty list does not
/// restrict; several lists must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionRules {
    /// Modalities (0008,0060), e.g. `["CR", "DX"]`.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// SOP Class UIDs (0008,0016).
    #[serde(default)]
    pub sop_classes: Vec<String>,
    /// Body Part Examined (0018,0015) values, case-insensitive.
    #[serde(default)]
    pub body_parts: Vec<String>,
    /// Substrings of the Series Description (0008,103E), case-insensitive.
    #[serde(default)]
    pub series_description_contains: Vec<String>,
}

impl SelectionRules {
    pub fn selects_everything(&self) -> bool {
        self.modalities.is_empty()
            && self.sop_classes.is_empty()
            && self.body_parts.is_empty()
            && self.series_description_contains.is_empty()
    }
}

/// Credentials for one DICOMweb root. Secrets are read from files, never written in the
/// configuration itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PacsCredentials {
    /// The DICOMweb root, as in `endpoints` or `default_endpoint`.
    pub url: String,
    pub auth: PacsAuthKind,
    /// The user name for `basic`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (`basic`) or the bearer token (`bearer`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PacsAuthKind {
    None,
    Basic,
    Bearer,
}

impl DicomwebSettings {
    /// True when `url` is an allowlisted root (trailing slashes aside).
    pub fn allows(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        self.endpoints.iter().any(|e| e.trim_end_matches('/') == url)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The `iss` the client puts in its JWTs.
    pub iss: String,
    /// An inline JWKS (`{"keys":[...]}`), as a JSON string.
    #[serde(default)]
    pub jwks: Option<String>,
    /// A JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URLs the client may name in its JWT `jku` header; the first is used when the JWT has
    /// no `jku` and no inline keys are configured.
    #[serde(default)]
    pub jku: Vec<String>,
    /// FHIR base URLs this client may send as `fhirServer`; radsight fetches only from these.
    #[serde(default)]
    pub fhir_servers: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings {
                host: "127.0.0.1".into(),
                port: 8080,
                public_url: String::new(),
                max_body_bytes: 1024 * 1024,
                workers: 0,
                shutdown_grace_secs: default_shutdown_grace_secs(),
            },
            database: DatabaseSettings { url: "sqlite://data/radsight.db?mode=rwc".into(), max_connections: 16, acquire_timeout_ms: 5000 },
            auth: AuthSettings { leeway_secs: 30, max_token_lifetime_secs: 3600, jwks_fetch_timeout_ms: 2000, jwks_cache_secs: 300 },
            hooks: HookSettings {
                lookback_days: 365,
                smart_launch_url: String::new(),
                fhir_timeout_ms: 2500,
                fhir_max_response_bytes: 8 * 1024 * 1024,
                definitions_file: String::new(),
            },
            rules: RuleSettings {
                disabled: BTreeSet::new(),
                duplicate_window_days: 30,
                egfr_threshold: 30.0,
                egfr_max_age_days: 90,
                // MDRD (33914-3, 48642-3, 48643-1), CKD-EPI 2009 (62238-1, 88293-6, 88294-4)
                // and CKD-EPI 2021 (98979-8) creatinine-based eGFR.
                egfr_loinc_codes: ["33914-3", "48642-3", "48643-1", "62238-1", "88293-6", "88294-4", "98979-8"].map(String::from).to_vec(),
                pregnancy_max_age_days: 30,
                // SNOMED CT 293637006 |Allergy to contrast media (finding)|.
                contrast_allergy_codes: vec!["http://snomed.info/sct|293637006".into()],
            },
            audit: AuditSettings {
                origin: "radsight.local/audit".into(),
                checkpoint_key_file: "data/audit-checkpoint.pem".into(),
                checkpoint_dir: "data/checkpoints".into(),
                checkpoint_interval_secs: 300,
                retention_days: 2190,
                max_pending: 1024,
            },
            hl7: Hl7Settings {
                enabled: true,
                bind: "127.0.0.1:2575".into(),
                read_timeout_ms: 60_000,
                max_message_bytes: 1024 * 1024,
                max_connections: 32,
                message_deadline_ms: default_message_deadline_ms(),
                max_connections_per_source: default_max_connections_per_source(),
                allowed_sources: default_allowed_sources(),
                senders: Vec::new(),
                tls: None,
                study_uid_field: String::new(),
            },
            jobs: JobSettings {
                workers: 2,
                max_attempts: 5,
                backoff_base_ms: 30_000,
                backoff_max_ms: 3_600_000,
                lease_ms: 600_000,
                poll_interval_ms: 2_000,
                max_studies_per_notification: default_max_studies_per_notification(),
                memory_budget_mib: default_memory_budget_mib(),
            },
            dicomweb: DicomwebSettings {
                endpoints: Vec::new(),
                default_endpoint: String::new(),
                timeout_ms: 30_000,
                select: Default::default(),
                credentials: Vec::new(),
                max_study_bytes: 512 * 1024 * 1024,
                transfer_syntax: default_transfer_syntax(),
            },
            analysis: AnalysisSettings {
                models_dir: "models".into(),
                saliency: "grad-cam".into(),
                link_ttl_secs: 86_400,
                routes: Vec::new(),
                max_rows: 16_384,
                max_columns: 16_384,
                max_frames: 2_000,
                max_pixel_bytes: 1 << 30,
            },
            limits: LimitSettings::default(),
            outputs: OutputSettings::default(),
            smart: Default::default(),
            clients: Vec::new(),
            auditors: Vec::new(),
            patient_namespaces: Vec::new(),
            procedures: Vec::new(),
        }
    }
}

/// The configuration sections that environment variables may set.
const SECTIONS: [&str; 13] =
    ["server", "database", "auth", "hooks", "rules", "audit", "hl7", "jobs", "dicomweb", "analysis", "limits", "outputs", "smart"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read configuration")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the layered configuration. A missing default `radsight.toml` is fine; a missing
    /// file that was asked for explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::Invalid(format!("configuration file {} does not exist", p.display())));
            }
            Some(p) => figment = figment.merge(Toml::file(p)),
            None => figment = figment.merge(Toml::file("radsight.toml")),
        }
        // Only RADSIGHT_<SECTION>__<KEY> configures; other RADSIGHT_* variables (RADSIGHT_CONFIG,
        // RADSIGHT_LOG_FORMAT, ...) are not settings and must not be rejected as unknown keys.
        figment = figment.merge(
            Env::prefixed("RADSIGHT_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    SECTIONS.iter().any(|s| key.strip_prefix(s).is_some_and(|rest| rest.starts_with("__")))
                })
                .split("__"),
        );
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The namespace of the patient ids an EHR (a CDS client or SMART `iss`) sends.
    pub fn namespace_of_issuer(&self, iss: &str) -> PatientNamespace {
        match self.patient_namespaces.iter().find(|n| n.issuers.iter().any(|i| i == iss)) {
            Some(n) => PatientNamespace::new(n.name.clone()),
            None => PatientNamespace::new(format!("iss:{iss}")),
        }
    }

    /// The namespace of an HL7 patient id: its assigning authority (`PID-3.4`, else the
    /// sending facility `MSH-4`, as HL7 implies), compared on the first component.
    pub fn namespace_of_hl7(&self, authority: &str) -> PatientNamespace {
        let authority = authority.split('^').next().unwrap_or_default();
        match self.patient_namespaces.iter().find(|n| n.hl7_authorities.iter().any(|a| a == authority)) {
            Some(n) => PatientNamespace::new(n.name.clone()),
            None => PatientNamespace::new(format!("hl7:{authority}")),
        }
    }

    /// The patient namespace of a RIS destination: that of its assigning authority, else of
    /// its receiving facility.
    pub fn namespace_of_ris(&self, ris: &RisDestination) -> PatientNamespace {
        let authority = if ris.assigning_authority.is_empty() { &ris.receiving_facility } else { &ris.assigning_authority };
        self.namespace_of_hl7(authority)
    }

    /// The patient namespace of an EHR destination: that of the EHR whose `iss` is its FHIR
    /// base (SMART's `iss` is the FHIR base URL).
    pub fn namespace_of_ehr(&self, ehr: &EhrDestination) -> PatientNamespace {
        let base = ehr.fhir_base.trim_end_matches('/');
        match self.patient_namespaces.iter().find(|n| n.issuers.iter().any(|i| i.trim_end_matches('/') == base)) {
            Some(n) => PatientNamespace::new(n.name.clone()),
            None => self.namespace_of_issuer(base),
        }
    }

    /// Fills the URLs left empty once the listening port is known.
    pub fn resolve_urls(&mut self, bound_port: u16) {
        if self.server.public_url.is_empty() {
            self.server.public_url = format!("http://{}:{bound_port}", self.server.host);
        }
        if self.hooks.smart_launch_url.is_empty() {
            self.hooks.smart_launch_url = format!("{}/smart/launch", self.server.public_url);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let public = &self.server.public_url;
        if !public.is_empty() && (url::Url::parse(public).is_err() || public.ends_with('/')) {
            return invalid("server.public_url must be an absolute URL without a trailing slash".into());
        }
        if self.audit.retention_days < 183 {
            return invalid("audit.retention_days must be at least 183 (6 months)".into());
        }
        if self.audit.max_pending == 0 {
            return invalid("audit.max_pending must be at least 1".into());
        }
        let origin = &self.audit.origin;
        if origin.is_empty() || origin.contains(char::is_whitespace) || origin.contains('+') {
            return invalid("audit.origin must be non-empty, without spaces or '+'".into());
        }
        if !self.hl7.study_uid_field.is_empty() && hl7_parser::query::LocationQuery::parse(&self.hl7.study_uid_field).is_err() {
            return invalid(format!("hl7.study_uid_field {:?} is not a field location such as OBR.20", self.hl7.study_uid_field));
        }
        if self.jobs.max_attempts < 1 || self.jobs.lease_ms == 0 || self.jobs.poll_interval_ms == 0 {
            return invalid("jobs.max_attempts must be at least 1, and lease_ms and poll_interval_ms above 0".into());
        }
        for e in self.dicomweb.endpoints.iter().chain(std::iter::once(&self.dicomweb.default_endpoint).filter(|e| !e.is_empty())) {
            if url::Url::parse(e).is_err() {
                return invalid(format!("dicomweb: {e} is not an absolute URL"));
            }
        }
        for c in &self.dicomweb.credentials {
            let known = self.dicomweb.allows(&c.url) || c.url.trim_end_matches('/') == self.dicomweb.default_endpoint.trim_end_matches('/');
            if !known {
                return invalid(format!("dicomweb.credentials: {} is neither in endpoints nor the default_endpoint", c.url));
            }
            let complete = match c.auth {
                PacsAuthKind::None => true,
                PacsAuthKind::Basic => c.username.is_some() && c.secret_file.is_some(),
                PacsAuthKind::Bearer => c.secret_file.is_some(),
            };
            if !complete {
                return invalid(format!(
                    "dicomweb.credentials for {}: basic needs username and secret_file, bearer needs secret_file",
                    c.url
                ));
            }
        }
        self.smart.validate().map_err(ConfigError::Invalid)?;
        for root in &self.outputs.pacs {
            let known = self.dicomweb.allows(root) || root.trim_end_matches('/') == self.dicomweb.default_endpoint.trim_end_matches('/');
            if !known {
                return invalid(format!("outputs.pacs: {root} is neither in dicomweb.endpoints nor the default_endpoint"));
            }
        }
        if !self.outputs.uid_root.is_empty() && radsight_dicom_report::UidRoot::parse(&self.outputs.uid_root).is_err() {
            return invalid(format!(
                "outputs.uid_root {:?} is not a UID root (digits and dots, at most 43 characters)",
                self.outputs.uid_root
            ));
        }
        if self.outputs.max_attempts < 1 || self.outputs.poll_interval_ms == 0 || self.outputs.lease_ms == 0 {
            return invalid("outputs.max_attempts must be at least 1, and poll_interval_ms and lease_ms above 0".into());
        }
        let mut ris_names = BTreeSet::new();
        for r in &self.outputs.ris {
            if r.name.is_empty() || !ris_names.insert(r.name.as_str()) {
                return invalid(format!("outputs.ris: every destination needs a unique name ({:?})", r.name));
            }
            if r.address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then(|| port.parse::<u16>().ok()).flatten()).is_none()
            {
                return invalid(format!("outputs.ris {}: address {:?} is not host:port", r.name, r.address));
            }
            if r.ack_timeout_ms == 0 {
                return invalid(format!("outputs.ris {}: ack_timeout_ms must be above 0", r.name));
            }
            if r.tls.as_ref().is_some_and(|t| t.cert_file.is_some() != t.key_file.is_some()) {
                return invalid(format!("outputs.ris {}: tls.cert_file and tls.key_file go together", r.name));
            }
        }
        let mut ehr_bases = BTreeSet::new();
        for e in &self.outputs.ehr {
            for u in std::iter::once(&e.fhir_base).chain(Some(&e.token_url).filter(|u| !u.is_empty())) {
                if url::Url::parse(u).is_err() {
                    return invalid(format!("outputs.ehr: {u} is not an absolute URL"));
                }
            }
            if !ehr_bases.insert(e.fhir_base.trim_end_matches('/')) {
                return invalid(format!("outputs.ehr: {} is listed twice", e.fhir_base));
            }
            if e.client_id.is_empty() || e.scope.trim().is_empty() || e.timeout_ms == 0 {
                return invalid(format!("outputs.ehr {}: client_id and scope are required, and timeout_ms above 0", e.fhir_base));
            }
        }
        let (mut names, mut members) = (BTreeSet::new(), BTreeSet::new());
        for n in &self.patient_namespaces {
            if n.name.is_empty() || n.name.contains(':') || !names.insert(n.name.as_str()) {
                return invalid(format!("patient_namespaces: {:?} must be a unique name without ':'", n.name));
            }
            let named = n.issuers.iter().map(|i| ("issuer", i)).chain(n.hl7_authorities.iter().map(|a| ("hl7 authority", a)));
            for (kind, m) in named {
                if !members.insert((kind, m.as_str())) {
                    return invalid(format!("patient_namespaces: {kind} {m} is in more than one namespace"));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for c in self.clients.iter().chain(&self.auditors) {
            if !seen.insert(c.iss.as_str()) {
                return invalid(format!("{} is registered twice (clients and auditors must differ)", c.iss));
            }
            if c.jwks.is_none() && c.jwks_file.is_none() && c.jku.is_empty() {
                return invalid(format!("client {} has no keys: set jwks, jwks_file or jku", c.iss));
            }
            for u in c.jku.iter().chain(&c.fhir_servers) {
                if url::Url::parse(u).is_err() {
                    return invalid(format!("client {}: {u} is not an absolute URL", c.iss));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_loads_and_environment_variables_override_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("radsight.example.toml");
        // SAFETY: this is the only test in the binary that touches these variables.
        unsafe {
            std::env::set_var("RADSIGHT_SERVER__PORT", "9191");
            std::env::set_var("RADSIGHT_SOMETHING_ELSE", "not a setting");
            std::env::set_var("DATABASE_URL", "postgres://radsight@db.example/radsight");
        }
        let s = Settings::load(Some(&path)).unwrap();
        unsafe {
            std::env::remove_var("RADSIGHT_SERVER__PORT");
            std::env::remove_var("RADSIGHT_SOMETHING_ELSE");
            std::env::remove_var("DATABASE_URL");
        }
        assert_eq!(s.server.port, 9191);
        assert_eq!(s.database.url, "postgres://radsight@db.example/radsight");
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.clients[0].fhir_servers, ["https://ehr.example.org/fhir"]);
        assert_eq!(s.rules.egfr_threshold, 30.0);
    }

    #[test]
    fn an_explicit_missing_file_and_bad_clients_are_refused() {
        assert!(Settings::load(Some(Path::new("/nonexistent/radsight.toml"))).is_err());
        let mut s = Settings::default();
        s.clients.push(ClientSettings { iss: "https://a".into(), jwks: None, jwks_file: None, jku: vec![], fhir_servers: vec![] });
        assert!(s.validate().unwrap_err().to_string().contains("has no keys"));
        s.server.public_url = "http://x/".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        // Each section is a field of Settings that environment variables may set.
        let fields = serde_json::to_value(Settings::default()).unwrap();
        let sections: Vec<&str> = fields.as_object().unwrap().iter().filter(|(_, v)| v.is_object()).map(|(k, _)| k.as_str()).collect();
        for s in sections {
            assert!(SECTIONS.contains(&s), "[{s}] is missing from SECTIONS");
        }
    }

    #[test]
    fn patient_namespaces_are_separate_unless_configured_shared() {
        let mut s = Settings::default();
        assert_ne!(s.namespace_of_issuer("https://a"), s.namespace_of_issuer("https://b"));
        assert_ne!(s.namespace_of_issuer("https://a"), s.namespace_of_hl7("A"));
        assert_eq!(s.namespace_of_hl7("HOSP^1.2.3^ISO"), s.namespace_of_hl7("HOSP"));
        s.patient_namespaces = vec![PatientNamespaceSettings {
            name: "general".into(),
            issuers: vec!["https://a".into(), "https://a/fhir".into()],
            hl7_authorities: vec!["HOSP".into()],
        }];
        assert!(s.validate().is_ok());
        let general = PatientNamespace::new("general");
        assert_eq!(
            [s.namespace_of_issuer("https://a"), s.namespace_of_issuer("https://a/fhir"), s.namespace_of_hl7("HOSP")],
            [general.clone(), general.clone(), general]
        );
        assert_eq!(s.namespace_of_issuer("https://b").as_str(), "iss:https://b");
        s.patient_namespaces.push(PatientNamespaceSettings {
            name: "other".into(),
            issuers: vec!["https://a".into()],
            hl7_authorities: vec![],
        });
        assert!(s.validate().unwrap_err().to_string().contains("more than one namespace"));
    }

    #[test]
    fn empty_urls_are_derived_from_the_bound_port() {
        let mut s = Settings::default();
        s.resolve_urls(4321);
        assert_eq!(s.server.public_url, "http://127.0.0.1:4321");
        assert_eq!(s.hooks.smart_launch_url, "http://127.0.0.1:4321/smart/launch");
    }
}
