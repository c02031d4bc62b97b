//! The demo (built only with the `demo` feature, as `scripts/run.sh` does): the demo EHR from
//! `radsight-demo-ehr` mounted at `/demo-ehr/` and registered as a SMART EHR, and its patient's
//! studies: a phantom chest radiograph analysed by the real shipped model on start, through the
//! same pipeline and audit entries as a study from the PACS, so a newcomer sees the app work on
//! a real result, and a second study not analysed yet.

use actix_web::web;
use sea_orm::{ActiveValue::Set, EntityTrait};
use secrecy::SecretString;

use radsight_demo_ehr::{BackendClient, SimClient, demo_patient, random_string};
pub use radsight_demo_ehr::{DEMO_CLIENT_ID, DEMO_PATIENT, EhrSim};

use crate::analysis::Analyzer;
use crate::analysis::phantom_dicom::{PhantomInstance, clear_nodule_phantom, phantom_part10};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::{DEFAULT_SCOPES, EhrDestination, EhrSettings, Settings, TokenValidation};
use crate::domain::PatientNamespace;
use crate::results::store::StoredResult;
use crate::store::entities::study;

pub const DEMO_STUDY_UID: &str = "2.25.314159265358979323846264338327950288";
const PENDING_STUDY_UID: &str = "2.25.271828182845904523536028747135266249";

/// Builds the demo EHR at `{public_url}/demo-ehr` and its registration as a SMART EHR, with an
/// introspection secret that lives in memory only.
pub fn demo_ehr(settings: &Settings) -> (EhrSim, (EhrSettings, Option<SecretString>)) {
    let public = &settings.server.public_url;
    let sim = EhrSim::new(&format!("{public}/demo-ehr"), vec![demo_patient(DEMO_PATIENT)]);
    sim.register_client(SimClient {
        client_id: DEMO_CLIENT_ID.into(),
        redirect_uris: vec![format!("{public}/smart/")],
        launch_url: format!("{public}/smart/launch"),
    });
    let secret = random_string(32);
    sim.register_introspection_client(DEMO_CLIENT_ID, &secret);
    let ehr = EhrSettings {
        iss: sim.iss(),
        client_id: DEMO_CLIENT_ID.into(),
        scopes: DEFAULT_SCOPES.into(),
        validation: TokenValidation::Introspection,
        introspection_endpoint: Some(sim.introspection_endpoint()),
        introspection_client_id: None,
        client_secret_file: None,
        jwks_url: None,
        token_issuer: None,
        token_audience: None,
    };
    (sim, (ehr, Some(SecretString::from(secret))))
}

/// radsight's client id for SMART Backend Services at the demo EHR.
pub const DEMO_BACKEND_CLIENT_ID: &str = "radsight-demo-backend";

/// Makes the demo EHR an `outputs.ehr` destination: radsight's keyring gets its first key if it
/// has none, and the demo EHR registers radsight as a backend-services client whose keys are
/// those published at radsight's `/.well-known/jwks.json` (fetched by the demo EHR, as a real
/// authorisation server would).
pub fn write_back_to(settings: &mut Settings, sim: &EhrSim) -> anyhow::Result<()> {
    let ring = crate::keys::keyring::Keyring::open(&settings.outputs.keys_dir);
    if ring.active()?.is_none() {
        let entry = ring.rotate(jsonwebtoken::Algorithm::ES384, time::OffsetDateTime::now_utc().unix_timestamp())?;
        tracing::info!(kid = %entry.kid, "made radsight's first signing key for the demo EHR's write-back");
    }
    sim.register_backend_client(BackendClient {
        client_id: DEMO_BACKEND_CLIENT_ID.into(),
        jwks_url: Some(format!("{}/.well-known/jwks.json", settings.server.public_url)),
        jwks: None,
        scopes: crate::configuration::DEFAULT_EHR_SCOPE.split(' ').map(str::to_owned).collect(),
    });
    if settings.outputs.ehr_at(&sim.fhir_base()).is_none() {
        settings.outputs.ehr.push(EhrDestination {
            fhir_base: sim.fhir_base(),
            client_id: DEMO_BACKEND_CLIENT_ID.into(),
            token_url: String::new(),
            scope: crate::configuration::DEFAULT_EHR_SCOPE.into(),
            timeout_ms: 10_000,
        });
    }
    Ok(())
}

/// The demo EHR's pages run no script and load nothing from elsewhere; its one form posts to
/// itself (and is redirected, same origin, to the app's launch), and no one may frame it.
const DEMO_EHR_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Mounts the demo EHR at `/demo-ehr`.
pub fn routes(cfg: &mut web::ServiceConfig, sim: &EhrSim) {
    let sim = sim.clone();
    cfg.service(
        web::scope("/demo-ehr")
            .wrap(actix_web::middleware::DefaultHeaders::new().add(("content-security-policy", DEMO_EHR_CSP)))
            .configure(move |c| sim.routes(c)),
    );
}

async fn insert_study(
    db: &sea_orm::DatabaseConnection,
    uid: &str,
    namespace: &PatientNamespace,
    patient_ref: &str,
    accession: &str,
    description: &str,
) -> Result<(), sea_orm::DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    study::Entity::insert(study::ActiveModel {
        study_uid: Set(uid.into()),
        patient_ref: Set(patient_ref.into()),
        patient_namespace: Set(Some(namespace.as_str().to_owned())),
        accession: Set(Some(accession.into())),
        modality: Set("DX".into()),
        body_site: Set(Some("Chest".into())),
        procedure_code: Set(Some("http://loinc.org|36554-4".into())),
        description: Set(Some(description.into())),
        started_at: Set(Some(now - 3 * 86_400)),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .map(|_| ())
}

/// Seeds the demo patient's studies once (a restart finds them and adds nothing): a phantom
/// chest radiograph analysed by the real shipped model, through the same pipeline and audit
/// entries as a study from the PACS, and a second study still pending.
pub async fn seed_demo(
    db: &sea_orm::DatabaseConnection,
    audit: &AuditLog,
    all_settings: &Settings,
    namespace: &PatientNamespace,
) -> anyhow::Result<()> {
    let settings = &all_settings.analysis;
    if study::Entity::find_by_id(DEMO_STUDY_UID).one(db).await?.is_some() {
        return Ok(());
    }
    let patient_ref = format!("Patient/{DEMO_PATIENT}");
    let analyzer = Analyzer::open(settings)?;
    let phantom = clear_nodule_phantom(256);
    let meta = PhantomInstance {
        patient_id: DEMO_PATIENT,
        study_uid: DEMO_STUDY_UID,
        series_uid: &format!("{DEMO_STUDY_UID}.1"),
        sop_uid: &format!("{DEMO_STUDY_UID}.1.1"),
        accession: "DEMO0001",
    };
    let dicom = phantom_part10(&meta, 256, 256, phantom.image.data());
    let analysed = tokio::task::spawn_blocking(move || analyzer.analyse(&dicom, None, None)).await??;
    insert_study(db, DEMO_STUDY_UID, namespace, &patient_ref, "DEMO0001", "Chest X-ray (synthetic phantom, demo)").await?;
    let id = uuid::Uuid::new_v4().to_string();
    let event = AuditEvent::new(Action::ModelInference, Outcome::Success)
        .patient(Some(patient_ref.clone()))
        .entity("ImagingStudy", DEMO_STUDY_UID)
        .entity("AnalysisResult", id.clone())
        .entity("Model", format!("{}@{}", analysed.model.id, analysed.model.version))
        .detail("weights_sha256", analysed.model.weights_sha256.clone())
        .detail("input_sha256", analysed.input_sha256.clone())
        .detail("via", "demo-ehr");
    let stored = StoredResult(analysed.into_result(id.clone(), DEMO_STUDY_UID.into(), None));
    audit.record_with(db, event, Some(Box::new(stored))).await?;
    // Its deliveries (the demo EHR's record, and whatever outputs are configured), as the job
    // worker queues them for a study from the PACS.
    crate::outbox::enqueue_for_result(db, all_settings, &id, DEMO_STUDY_UID).await?;
    // Announced, not analysed yet: the app and the cards show it as pending.
    insert_study(db, PENDING_STUDY_UID, namespace, &patient_ref, "DEMO0002", "Chest X-ray follow-up (not analysed yet)").await?;
    Ok(())
}
