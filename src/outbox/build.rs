//! What every output is built from: the stored result, its study, and the log receipt of its
//! `model.inference` entry; and why building can fail.

use sea_orm::DatabaseConnection;

use crate::audit::checkpoint::CheckpointSigner;
use crate::audit::proof::{Receipt, ReceiptError, receipt_for};
use crate::audit::{Action, AuditLog};
use crate::results::store;
use crate::store::entities::{analysis_result, study};

/// Why an object could not be built. Only reading failures are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading the result")]
    Read(#[source] sea_orm::DbErr),
    #[error("the result {0} no longer exists")]
    NoResult(String),
    #[error("the result has no finished analysis of a source image to report")]
    NotReportable,
    #[error("the result's audit receipt could not be made")]
    Receipt(#[from] ReceiptError),
    #[error("the result's inference entry is not in the audit log")]
    NoReceipt,
    #[error("the overlay picture could not be read")]
    Overlay(String),
    #[error("writing the DICOM object")]
    Write(#[from] radsight_dicom_report::WriteError),
    #[error("writing the HL7 message")]
    Hl7(#[from] radsight_hl7_report::WriteError),
}

impl BuildError {
    pub fn code(&self) -> &'static str {
        match self {
            BuildError::Read(_) | BuildError::Receipt(_) => "output-build-unavailable",
            BuildError::NoResult(_) => "result-not-found",
            BuildError::NotReportable => "result-not-reportable",
            BuildError::NoReceipt => "result-without-inference-entry",
            BuildError::Overlay(_) => "overlay-unreadable",
            BuildError::Write(_) => "dicom-write-refused",
            BuildError::Hl7(_) => "hl7-write-refused",
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, BuildError::Read(_) | BuildError::Receipt(_))
    }
}

/// What building needs besides the database.
pub struct BuildContext<'a> {
    pub db: &'a DatabaseConnection,
    pub audit: &'a AuditLog,
    pub signer: &'a CheckpointSigner,
    pub checkpoint_dir: &'a std::path::Path,
    pub uid_root: Option<&'a radsight_dicom_report::UidRoot>,
    /// `server.public_url`, for the result's URL in the objects.
    pub public_url: &'a str,
}

/// A stored result with what every output of it carries.
pub struct Reportable {
    pub result: analysis_result::Model,
    pub study: study::Model,
    pub receipt: Receipt,
}

/// Reads result `result_id`, its study and its receipt.
pub async fn reportable(ctx: &BuildContext<'_>, result_id: &str) -> Result<Reportable, BuildError> {
    let (result, study) =
        store::find_with_study(ctx.db, result_id).await.map_err(BuildError::Read)?.ok_or_else(|| BuildError::NoResult(result_id.into()))?;
    if result.result_status() != crate::store::ResultStatus::Done {
        return Err(BuildError::NotReportable);
    }
    let receipt = receipt_for(ctx.db, ctx.audit, ctx.signer, Some(ctx.checkpoint_dir), Action::ModelInference, "AnalysisResult", result_id)
        .await?
        .ok_or(BuildError::NoReceipt)?;
    Ok(Reportable { result, study, receipt })
}
