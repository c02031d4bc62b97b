//! The DICOM objects a result is delivered to the PACS as, built from the stored result with
//! `radsight-dicom-report`: the TID 1500 SR (findings, algorithm, image library, faithfulness)
//! and the Secondary Capture of the saliency overlay, each carrying the log receipt of the
//! result's `model.inference` entry.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use radsight_dicom_report as report;

use super::OutputKind;
use super::build::{BuildContext, BuildError, Reportable, reportable};
use crate::results::faithfulness::FaithfulnessOfResult;
use crate::results::overlay::OverlayError;
use crate::results::store::findings;
use crate::store::entities::{analysis_result, study};

/// Builds the object `kind` of result `result_id`: (SOP Instance UID, Part 10 bytes).
pub async fn build(ctx: &BuildContext<'_>, kind: OutputKind, result_id: &str) -> Result<(String, Vec<u8>), BuildError> {
    let Reportable { result, study, receipt } = reportable(ctx, result_id).await?;
    let report = report_of(&result, &study, receipt, ctx.public_url)?;
    let written = match kind {
        OutputKind::StowSc => {
            let png = crate::results::overlay::saliency_png(ctx.db, result_id)
                .await
                .map_err(|e| match e {
                    OverlayError::Read(e) => BuildError::Read(e),
                    e => BuildError::Overlay(e.to_string()),
                })?
                .ok_or_else(|| BuildError::Overlay("the result has no overlay picture".into()))?;
            let overlay = overlay_of(&png.bytes, report.source_images[0].clone(), study.body_site.as_deref())?;
            report::write_saliency_capture(&report, &overlay, ctx.uid_root)?
        }
        _ => report::write_measurement_report(&report, ctx.uid_root)?,
    };
    Ok((written.sop_instance_uid.to_string(), written.bytes))
}

/// The report's plain values from the stored rows.
fn report_of(
    r: &analysis_result::Model,
    s: &study::Model,
    receipt: crate::audit::proof::Receipt,
    public_url: &str,
) -> Result<report::Report, BuildError> {
    let (Some(model_id), Some(version), Some(weights), Some(sop), Some(class), Some(series)) = (
        r.model_id.clone(),
        r.model_version.clone(),
        r.weights_sha256.clone(),
        r.sop_instance_uid.clone(),
        r.sop_class_uid.clone(),
        r.series_uid.clone(),
    ) else {
        return Err(BuildError::NotReportable);
    };
    let date_time = |unix: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let date = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
        let time = format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second());
        (date, time)
    };
    let (observed_date, observed_time) = date_time(r.created_at);
    let started = s.started_at.map(date_time);
    let findings = findings(r)
        .into_iter()
        .map(|f| report::Finding {
            label: f.display.clone(),
            // The card's SNOMED CT, RadLex or LOINC code when it gives one, else radsight's own label.
            code: match f.standard.as_ref().and_then(|c| c.dicom_scheme().map(|scheme| (c, scheme))) {
                Some((c, scheme)) => report::Code::new(&c.code, scheme, &c.display),
                None => report::Code::new(&f.code, report::PRIVATE_SCHEME, &f.display),
            },
            probability: f.probability,
            threshold: f.threshold,
            positive: f.is_positive(),
        })
        .collect();
    let invalid = |e: report::DateTimeError| {
        BuildError::Write(report::WriteError::CheckInput {
            object: report::ObjectKind::MeasurementReport,
            field: "date/time".into(),
            problem: e.to_string(),
        })
    };
    Ok(report::Report {
        study: report::StudyRef {
            study_instance_uid: s.study_uid.clone(),
            patient_id: s.patient_ref.strip_prefix("Patient/").unwrap_or(&s.patient_ref).to_owned(),
            patient_name: None,
            patient_birth_date: None,
            patient_sex: None,
            accession_number: s.accession.clone(),
            study_id: None,
            study_date: started.as_ref().map(|(d, _)| report::DicomDate::parse(d)).transpose().map_err(invalid)?,
            study_time: started.as_ref().map(|(_, t)| report::DicomTime::parse(t)).transpose().map_err(invalid)?,
            referring_physician_name: None,
        },
        source_images: vec![report::SourceImage { sop_class_uid: class, sop_instance_uid: sop, series_instance_uid: series }],
        algorithm: report::Algorithm { model_id, model_version: version, weights_sha256_hex: weights, manufacturer: "radsight".into() },
        findings,
        saliency: r.saliency_method.clone().and_then(|method| {
            // ROAD, fixed in advance, when the result recorded it; else the deletion AUC.
            match FaithfulnessOfResult::of(r).road {
                Some(road) => Some(report::Saliency {
                    method,
                    faithfulness_metric_name: format!(
                        "ROAD combined, remove and debias (higher is more faithful; a random map scored {:.4})",
                        road.random.combined
                    ),
                    faithfulness_value: f64::from(road.map.combined),
                }),
                None => r.deletion_auc.map(|auc| report::Saliency {
                    method,
                    faithfulness_metric_name: "deletion AUC (lower is more faithful)".into(),
                    faithfulness_value: auc,
                }),
            }
        }),
        result_id: r.id.clone(),
        result_url: Some(format!("{public_url}/results/{}", r.id)),
        observed_at: report::DicomDateTime::parse(&observed_date, &observed_time).map_err(invalid)?,
        procedure_reported: None,
        receipt: Some(report::Receipt {
            leaf_index: receipt.leaf_index,
            tree_size: receipt.tree_size,
            entry_base64: STANDARD.encode(receipt.entry.as_bytes()),
            proof_base64: receipt.proof.iter().map(|h| STANDARD.encode(hex::decode(h).unwrap_or_default())).collect(),
            checkpoint: receipt.checkpoint,
            log_origin: receipt.origin,
        }),
    })
}

/// The overlay PNG (RGB or RGBA, 8-bit) as the RGB image the Secondary Capture carries.
fn overlay_of(png_bytes: &[u8], source: report::SourceImage, body_part: Option<&str>) -> Result<report::OverlayImage, BuildError> {
    let bad = |e: String| BuildError::Overlay(e);
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let pixels = &buf[..info.buffer_size()];
    let rgb: Vec<u8> = match info.color_type {
        png::ColorType::Rgb => pixels.to_vec(),
        png::ColorType::Rgba => pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => pixels.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        other => return Err(bad(format!("{other:?} pictures are not expected"))),
    };
    let (width, height) =
        (u16::try_from(info.width).map_err(|_| bad("too wide".into()))?, u16::try_from(info.height).map_err(|_| bad("too tall".into()))?);
    Ok(report::OverlayImage {
        width,
        height,
        rgb,
        pixel_spacing_mm: None,
        source,
        anatomy: body_part.map(|b| report::Anatomy { body_part_examined: b.to_uppercase(), laterality: None }),
    })
}
