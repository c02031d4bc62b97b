//! Writing and reading analysis results and their artefacts.
//!
//! **Invariant:** a result and its pictures are written in the same transaction as the audit
//! entry that records the inference ([`StoredResult`] is attached to that entry), so there is
//! never a result without its trail, nor a trail naming a result that was not kept.

use futures_util::future::BoxFuture;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AttachedRows;
use crate::domain::PatientNamespace;
use crate::store::ResultStatus;
use crate::store::entities::{analysis_result, result_artefact, study};

/// One finding of a model, as stored in `analysis_results.findings`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Finding {
    pub code: String,
    pub display: String,
    /// Calibrated probability in [0, 1].
    pub probability: f64,
    /// The model card's decision threshold for this label.
    pub threshold: f64,
    /// The label's standard code (SNOMED CT, RadLex, LOINC) when the model card gives one;
    /// `code` stays radsight's own label name. Absent on results stored before 2026-12-04.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard: Option<StandardCode>,
    /// For a segmentation model's region: its size. `probability` is then 1 when the model
    /// marked any pixel with the label and 0 when it marked none, against a threshold of 0.5
    /// (a U-Net's argmax mask is a decision, not a calibrated probability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<RegionArea>,
}

/// The size of a segmented region.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RegionArea {
    /// Pixels of the model's input grid assigned to the label.
    pub model_pixels: u64,
    /// The area in mm², when the image states its pixel spacing.
    pub mm2: Option<f64>,
    /// `PixelSpacing` or `ImagerPixelSpacing` (sizes at the detector, magnified in a
    /// projection radiograph); `None` without spacing.
    pub spacing_source: Option<String>,
}

impl RegionArea {
    /// `"412 mm²"`, or the pixel count when no spacing is known.
    pub fn describe(&self) -> String {
        match self.mm2 {
            Some(mm2) => format!(
                "{mm2:.0} mm²{}",
                if self.spacing_source.as_deref() == Some("ImagerPixelSpacing") { " at the detector" } else { "" }
            ),
            None => format!("{} model pixels (no pixel spacing in the image)", self.model_pixels),
        }
    }
}

/// A coded concept in a standard terminology, as a FHIR `Coding` carries it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StandardCode {
    /// Code system URI, e.g. `http://snomed.info/sct`.
    pub system: String,
    pub code: String,
    pub display: String,
}

impl StandardCode {
    /// The coding scheme designator for DICOM (PS3.16 Table 8-1), when radsight knows the system.
    pub fn dicom_scheme(&self) -> Option<&'static str> {
        match self.system.as_str() {
            "http://snomed.info/sct" => Some("SCT"),
            "http://radlex.org" | "http://www.radlex.org" => Some("RADLEX"),
            "http://loinc.org" => Some("LN"),
            _ => None,
        }
    }

    /// The coding system for HL7 v2 (table 0396): SNOMED CT and LOINC; others stay radsight's.
    pub fn hl7_system(&self) -> Option<&'static str> {
        match self.system.as_str() {
            "http://snomed.info/sct" => Some("SCT"),
            "http://loinc.org" => Some("LN"),
            _ => None,
        }
    }
}

impl Finding {
    pub fn is_positive(&self) -> bool {
        self.probability >= self.threshold
    }
}

/// Whether findings are a segmentation's regions (with areas) rather than a classifier's.
pub fn are_regions(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.area.is_some())
}

/// A result's one-line conclusion, the same in the FHIR DiagnosticReport and the ORU: the
/// findings above their thresholds with their probabilities, and the model that made them.
pub fn conclusion(found: &[Finding], model_id: &str, version: &str) -> String {
    if are_regions(found) {
        let outlined: Vec<String> = found
            .iter()
            .filter(|f| f.is_positive())
            .map(|f| format!("{} ({})", f.display, f.area.as_ref().map(RegionArea::describe).unwrap_or_default()))
            .collect();
        return match outlined.is_empty() {
            true => format!("No region outlined ({model_id} {version})."),
            false => format!("Outlined: {} ({model_id} {version}).", outlined.join(", ")),
        };
    }
    let positives: Vec<String> =
        found.iter().filter(|f| f.is_positive()).map(|f| format!("{} (p={:.2})", f.display, f.probability)).collect();
    match positives.is_empty() {
        true => format!("No finding above its threshold ({model_id} {version})."),
        false => format!("Suspected: {} ({model_id} {version}).", positives.join(", ")),
    }
}

/// The exact model that made a result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelIdentity {
    pub id: String,
    pub version: String,
    pub weights_sha256: String,
}

/// The pictures and maps kept with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtefactKind {
    /// The windowed original, grayscale PNG, on the display grid (the source, shrunk by a whole
    /// factor to at most 1024 pixels a side; see `analysis::render`).
    ImagePng,
    /// The saliency map blended over the windowed original, RGB PNG, display grid: rendered
    /// from `ImagePng` and `HeatmapPng` when first read, then kept (`results::overlay`).
    SaliencyPng,
    /// The colour-mapped saliency with alpha from the map, RGBA PNG, display grid.
    HeatmapPng,
    /// The saliency map on the model's (letterboxed) input grid, little-endian f32, row-major.
    /// Results stored before 2026-12-03 hold it on the source grid; `width`/`height` say which.
    SaliencyMap,
    /// A segmentation's class map on the display grid, 8-bit grayscale PNG: each pixel's output
    /// channel (0 background, `i` the card's label `i − 1`). The app draws its contours.
    MaskPng,
}

impl ArtefactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtefactKind::ImagePng => "image-png",
            ArtefactKind::SaliencyPng => "saliency-png",
            ArtefactKind::HeatmapPng => "heatmap-png",
            ArtefactKind::SaliencyMap => "saliency-map",
            ArtefactKind::MaskPng => "mask-png",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ArtefactKind::SaliencyMap => "application/octet-stream",
            _ => "image/png",
        }
    }
}

pub struct Artefact {
    pub kind: ArtefactKind,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// A finished analysis, ready to store.
pub struct NewResult {
    pub id: String,
    pub study_uid: String,
    pub job_id: Option<String>,
    pub model: ModelIdentity,
    /// Summary of the model card at inference time (intended use, limitations, metrics).
    pub model_card: serde_json::Value,
    pub findings: Vec<Finding>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub series_uid: Option<String>,
    pub input_sha256: String,
    pub saliency_method: String,
    /// Saliency parameters, peak and box in source pixel coordinates, letterbox geometry.
    pub explanation: serde_json::Value,
    pub deletion_auc: Option<f64>,
    pub random_deletion_auc: Option<f64>,
    pub runtime_ms: i64,
    pub artefacts: Vec<Artefact>,
    /// The image's BodyPartExamined: fills the study's body site when the announcement (HL7,
    /// FHIR) did not give one, so hooks can tell which orders the study is relevant to.
    pub body_part: Option<String>,
}

/// A result attached to its `model.inference` audit entry.
pub struct StoredResult(pub NewResult);

impl AttachedRows for StoredResult {
    fn write<'t>(self: Box<Self>, conn: &'t DatabaseTransaction, _seq: i64) -> BoxFuture<'t, Result<(), DbErr>> {
        Box::pin(async move { insert(conn, self.0).await })
    }
}

/// A study that ended without findings, attached to its audit entry: `failed` (the study
/// shows "unavailable", not "pending") or `not-applicable` (no model is for this kind of
/// image; no card is shown).
pub struct FailedResult {
    pub id: String,
    pub study_uid: String,
    pub job_id: Option<String>,
    pub model: Option<ModelIdentity>,
    pub error_code: String,
    /// `Failed` or `NotApplicable`.
    pub status: ResultStatus,
}

impl AttachedRows for FailedResult {
    fn write<'t>(self: Box<Self>, conn: &'t DatabaseTransaction, _seq: i64) -> BoxFuture<'t, Result<(), DbErr>> {
        Box::pin(async move {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            analysis_result::Entity::insert(analysis_result::ActiveModel {
                id: Set(self.id),
                study_uid: Set(self.study_uid),
                status: Set(self.status.as_str().into()),
                model_id: Set(self.model.as_ref().map(|m| m.id.clone())),
                model_version: Set(self.model.as_ref().map(|m| m.version.clone())),
                weights_sha256: Set(self.model.map(|m| m.weights_sha256)),
                findings: Set("[]".into()),
                error: Set(Some(self.error_code)),
                created_at: Set(now),
                updated_at: Set(now),
                job_id: Set(self.job_id),
                ..Default::default()
            })
            .exec_without_returning(conn)
            .await
            .map(|_| ())
        })
    }
}

async fn insert<C: ConnectionTrait>(conn: &C, r: NewResult) -> Result<(), DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Some(part) = r.body_part.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        study::Entity::update_many()
            .col_expr(study::Column::BodySite, sea_orm::sea_query::Expr::value(part.to_lowercase()))
            .filter(study::Column::StudyUid.eq(r.study_uid.as_str()))
            .filter(study::Column::BodySite.is_null())
            .exec(conn)
            .await?;
    }
    analysis_result::Entity::insert(analysis_result::ActiveModel {
        id: Set(r.id.clone()),
        study_uid: Set(r.study_uid),
        status: Set(ResultStatus::Done.as_str().into()),
        model_id: Set(Some(r.model.id)),
        model_version: Set(Some(r.model.version)),
        weights_sha256: Set(Some(r.model.weights_sha256)),
        findings: Set(serde_json::to_string(&r.findings).expect("findings serialise")),
        error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        sop_instance_uid: Set(r.sop_instance_uid),
        sop_class_uid: Set(r.sop_class_uid),
        series_uid: Set(r.series_uid),
        input_sha256: Set(Some(r.input_sha256)),
        saliency_method: Set(Some(r.saliency_method)),
        explanation: Set(Some(r.explanation.to_string())),
        deletion_auc: Set(r.deletion_auc),
        random_deletion_auc: Set(r.random_deletion_auc),
        runtime_ms: Set(Some(r.runtime_ms)),
        job_id: Set(r.job_id),
        model_card: Set(Some(r.model_card.to_string())),
    })
    .exec_without_returning(conn)
    .await?;
    if r.artefacts.is_empty() {
        return Ok(());
    }
    let rows = r.artefacts.into_iter().map(|a| result_artefact::ActiveModel {
        result_id: Set(r.id.clone()),
        kind: Set(a.kind.as_str().into()),
        media_type: Set(a.kind.media_type().into()),
        width: Set(a.width as i32),
        height: Set(a.height as i32),
        sha256: Set(hex::encode(Sha256::digest(&a.bytes))),
        bytes: Set(a.bytes),
        created_at: Set(now),
    });
    result_artefact::Entity::insert_many(rows).exec_without_returning(conn).await.map(|_| ())
}

pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<analysis_result::Model>, DbErr> {
    analysis_result::Entity::find_by_id(id.to_owned()).one(conn).await
}

/// A result with the study it was made on; `None` when either is missing or `id` is not a
/// result id at all (ids are UUIDs, so anything else is not looked up).
pub async fn find_with_study<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<(analysis_result::Model, study::Model)>, DbErr> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let Some(result) = find(conn, id).await? else { return Ok(None) };
    Ok(study::Entity::find_by_id(result.study_uid.clone()).one(conn).await?.map(|s| (result, s)))
}

pub async fn artefact<C: ConnectionTrait>(conn: &C, id: &str, kind: ArtefactKind) -> Result<Option<result_artefact::Model>, DbErr> {
    result_artefact::Entity::find_by_id((id.to_owned(), kind.as_str().to_owned())).one(conn).await
}

/// The newest result for a study, if any.
pub async fn latest_for_study<C: ConnectionTrait>(conn: &C, study_uid: &str) -> Result<Option<analysis_result::Model>, DbErr> {
    analysis_result::Entity::find()
        .filter(analysis_result::Column::StudyUid.eq(study_uid))
        .order_by_desc(analysis_result::Column::UpdatedAt)
        .one(conn)
        .await
}

/// The findings of a stored result; a row that does not parse has none.
pub fn findings(row: &analysis_result::Model) -> Vec<Finding> {
    serde_json::from_str(&row.findings).unwrap_or_default()
}

/// A patient's studies, newest first, each with its latest analysis: the result rows of the
/// job that wrote the newest row (one per model that ran, in model order), or that row alone
/// when it has no job. Empty when the study has no result yet. The one read model that the
/// hooks' result cards and the SMART app's study list share. A patient is its id in a
/// namespace: the same id in another EHR's or authority's namespace is someone else.
pub async fn studies_with_latest_results<C: ConnectionTrait>(
    conn: &C,
    namespace: &PatientNamespace,
    patient_ref: &str,
) -> Result<Vec<(study::Model, Vec<analysis_result::Model>)>, DbErr> {
    let studies = study::Entity::find()
        .filter(study::Column::PatientNamespace.eq(namespace.as_str()))
        .filter(study::Column::PatientRef.eq(patient_ref))
        .order_by_desc(study::Column::StartedAt)
        .all(conn)
        .await?;
    if studies.is_empty() {
        return Ok(Vec::new());
    }
    let results = analysis_result::Entity::find()
        .filter(analysis_result::Column::StudyUid.is_in(studies.iter().map(|s| s.study_uid.clone())))
        .order_by_desc(analysis_result::Column::UpdatedAt)
        .all(conn)
        .await?;
    Ok(studies
        .into_iter()
        .map(|s| {
            let latest = latest_analysis(results.iter().filter(|r| r.study_uid == s.study_uid));
            (s, latest)
        })
        .collect())
}

/// From one study's rows, newest first: the rows of the newest row's job, by model id.
fn latest_analysis<'a>(mut newest_first: impl Iterator<Item = &'a analysis_result::Model>) -> Vec<analysis_result::Model> {
    let Some(newest) = newest_first.next() else {
        return Vec::new();
    };
    let mut rows = vec![newest.clone()];
    if newest.job_id.is_some() {
        rows.extend(newest_first.filter(|r| r.job_id == newest.job_id).cloned());
    }
    rows.sort_by(|a, b| a.model_id.cmp(&b.model_id).then(a.id.cmp(&b.id)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, job: Option<&str>, model: Option<&str>, updated_at: i64) -> analysis_result::Model {
        analysis_result::Model {
            id: id.into(),
            study_uid: "1.2.3".into(),
            status: "done".into(),
            model_id: model.map(Into::into),
            model_version: None,
            weights_sha256: None,
            findings: "[]".into(),
            error: None,
            created_at: updated_at,
            updated_at,
            sop_instance_uid: None,
            series_uid: None,
            input_sha256: None,
            sop_class_uid: None,
            saliency_method: None,
            explanation: None,
            deletion_auc: None,
            random_deletion_auc: None,
            runtime_ms: None,
            job_id: job.map(Into::into),
            model_card: None,
        }
    }

    fn ids(rows: &[analysis_result::Model]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn the_latest_analysis_is_every_row_of_the_newest_rows_job_by_model() {
        let newest_first = [
            row("b2", Some("job-2"), Some("zeta"), 20),
            row("a2", Some("job-2"), Some("alpha"), 20),
            row("a1", Some("job-1"), Some("alpha"), 10),
            row("old", None, None, 5),
        ];
        assert_eq!(ids(&latest_analysis(newest_first.iter())), vec!["a2", "b2"], "job 2's rows, in model order");
        assert_eq!(ids(&latest_analysis(newest_first[2..].iter())), vec!["a1"]);
        // A row without a job (written before jobs recorded it) stands alone.
        let jobless = [row("x", None, None, 30), row("y", None, Some("alpha"), 30)];
        assert_eq!(ids(&latest_analysis(jobless.iter())), vec!["x"]);
        assert!(latest_analysis(std::iter::empty()).is_empty());
    }
}
