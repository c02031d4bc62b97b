//! Test seeding for the SMART tests: [`insert_synthetic`] writes a study and a result row
//! directly, marked as synthetic everywhere a person looks (model id `radsight-demo-synthetic`,
//! its model card says it is not a model). It lives in test code only: the service cannot
//! write a result without a model and its audit entry.

use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use serde_json::json;
use sha2::{Digest, Sha256};

use radsight::store::entities::{analysis_result, result_artefact, study};

use crate::png::{ColorType, encode};

pub const SYNTHETIC_MODEL: &str = "radsight-demo-synthetic";

/// Size of the synthetic image.
pub const WIDTH: u32 = 192;
pub const HEIGHT: u32 = 160;
/// The synthetic lesion's box in source pixels (x, y, width, height).
pub const LESION: (u32, u32, u32, u32) = (110, 50, 40, 36);

/// A grey chest-like gradient with a bright blob where the lesion box is.
pub fn synthetic_image() -> Vec<u8> {
    let (lx, ly, lw, lh) = LESION;
    let (cx, cy) = (lx as f64 + lw as f64 / 2.0, ly as f64 + lh as f64 / 2.0);
    let mut px = Vec::with_capacity((WIDTH * HEIGHT) as usize);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let base = 40.0 + 120.0 * (x as f64 / WIDTH as f64) + 40.0 * (y as f64 / HEIGHT as f64);
            let d2 = ((x as f64 - cx) / (lw as f64 / 2.0)).powi(2) + ((y as f64 - cy) / (lh as f64 / 2.0)).powi(2);
            let blob = if d2 < 1.0 { 70.0 * (1.0 - d2) } else { 0.0 };
            px.push((base + blob).min(255.0) as u8);
        }
    }
    px
}

/// The saliency heat map (0..1) on the source grid, peaking on the lesion.
/// One map's ROAD as radsight-vision records it (`combined` = (LeRF − MoRF) / 2).
fn road(combined: f64) -> serde_json::Value {
    let percentiles: Vec<f64> = (1..=9).map(|k| 10.0 * k as f64).collect();
    json!({"percentiles": percentiles, "morf": [], "lerf": [], "morf_mean": -combined, "lerf_mean": combined,
           "combined": combined, "noise": 0.01, "seed": 0})
}

fn synthetic_saliency() -> Vec<f32> {
    let (lx, ly, lw, lh) = LESION;
    let (cx, cy) = (lx as f32 + lw as f32 / 2.0, ly as f32 + lh as f32 / 2.0);
    let mut m = Vec::with_capacity((WIDTH * HEIGHT) as usize);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let d2 = ((x as f32 - cx) / lw as f32).powi(2) + ((y as f32 - cy) / lh as f32).powi(2);
            m.push((-3.0 * d2).exp());
        }
    }
    m
}

/// A "jet"-like colour map, alpha from the value (transparent where the map is low).
fn heat_rgba(map: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(map.len() * 4);
    for &v in map {
        let v = v.clamp(0.0, 1.0);
        let r = (255.0 * (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0)) as u8;
        let g = (255.0 * (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0)) as u8;
        let b = (255.0 * (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0)) as u8;
        let a = (255.0 * ((v - 0.15) / 0.85).clamp(0.0, 1.0)) as u8;
        out.extend_from_slice(&[r, g, b, a]);
    }
    out
}

fn blended(gray: &[u8], heat: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(gray.len() * 4);
    for (i, &g) in gray.iter().enumerate() {
        let h = &heat[i * 4..i * 4 + 4];
        let a = h[3] as f32 / 255.0 * 0.6;
        for &c in &h[..3] {
            out.push((g as f32 * (1.0 - a) + c as f32 * a) as u8);
        }
        out.push(255);
    }
    out
}

/// What to seed.
pub struct SyntheticStudy<'a> {
    pub study_uid: &'a str,
    pub patient_ref: &'a str,
    /// `done` stores findings, explanation and artefacts; `pending`, `running` and `failed`
    /// store only the status; `None` stores the study without a result.
    pub status: Option<&'a str>,
    pub description: &'a str,
}

/// Stores the study (if new) and a result; returns the result id.
pub async fn insert_synthetic<C: ConnectionTrait>(db: &C, s: &SyntheticStudy<'_>) -> Result<Option<String>, DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if study::Entity::find_by_id(s.study_uid).one(db).await?.is_none() {
        study::Entity::insert(study::ActiveModel {
            study_uid: Set(s.study_uid.into()),
            patient_ref: Set(s.patient_ref.into()),
            patient_namespace: Set(Some(crate::helpers::TEST_NAMESPACE.into())),
            accession: Set(Some(format!("DEMO{}", &hex::encode(Sha256::digest(s.study_uid))[..6]))),
            modality: Set("DX".into()),
            body_site: Set(Some("Chest".into())),
            procedure_code: Set(Some("http://loinc.org|36554-4".into())),
            description: Set(Some(s.description.into())),
            started_at: Set(Some(now - 3 * 86_400)),
            created_at: Set(now),
        })
        .exec_without_returning(db)
        .await?;
    }
    let Some(status) = s.status else { return Ok(None) };
    let id = uuid::Uuid::new_v4().to_string();
    let done = status == "done";
    let (lx, ly, lw, lh) = LESION;
    let mut row = analysis_result::ActiveModel {
        id: Set(id.clone()),
        study_uid: Set(s.study_uid.into()),
        status: Set(status.into()),
        model_id: Set(Some(SYNTHETIC_MODEL.into())),
        model_version: Set(Some("0.0.1".into())),
        weights_sha256: Set(Some(hex::encode(Sha256::digest(SYNTHETIC_MODEL)))),
        findings: Set("[]".into()),
        error: Set((status == "failed").then(|| "decode-unsupported-transfer-syntax".into())),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    if done {
        row.findings = Set(json!([
            {"code": "nodule", "display": "Lung nodule", "probability": 0.82, "threshold": 0.5},
            {"code": "effusion", "display": "Pleural effusion", "probability": 0.12, "threshold": 0.4}
        ])
        .to_string());
        row.sop_instance_uid = Set(Some(format!("{}.1.1", s.study_uid)));
        row.series_uid = Set(Some(format!("{}.1", s.study_uid)));
        row.input_sha256 = Set(Some(hex::encode(Sha256::digest(synthetic_image()))));
        row.saliency_method = Set(Some("grad-cam".into()));
        row.explanation = Set(Some(
            json!({"method": "grad-cam", "params": {"layer": "synthetic"},
                "peak": {"x": lx + lw / 2, "y": ly + lh / 2},
                "bbox": {"x": lx, "y": ly, "width": lw, "height": lh},
                // Synthetic ROAD figures in the shape radsight-vision records them.
                "road": {"map": road(0.083), "random": road(0.004), "beats_random": true}})
            .to_string(),
        ));
        row.deletion_auc = Set(Some(0.21));
        row.random_deletion_auc = Set(Some(0.47));
        row.runtime_ms = Set(Some(140));
        row.model_card = Set(Some(
            json!({"id": SYNTHETIC_MODEL, "version": "0.0.1",
                "intended_use": "Demonstration of radsight's SMART app only. Not a model: the findings and heat map are synthetic.",
                "limitations": ["Synthetic data; no clinical meaning.", "Never use for patient care."],
                "metrics": {"auroc": 0.0, "sensitivity": 0.0, "specificity": 0.0, "validation_set": "none"},
                "training_data": "none"})
            .to_string(),
        ));
    }
    analysis_result::Entity::insert(row).exec_without_returning(db).await?;
    if done {
        let gray = synthetic_image();
        let heat = heat_rgba(&synthetic_saliency());
        let map: Vec<u8> = synthetic_saliency().iter().flat_map(|v| v.to_le_bytes()).collect();
        let artefacts = [
            ("image-png", "image/png", encode(WIDTH, HEIGHT, ColorType::Gray8, &gray)),
            ("heatmap-png", "image/png", encode(WIDTH, HEIGHT, ColorType::Rgba8, &heat)),
            ("saliency-png", "image/png", encode(WIDTH, HEIGHT, ColorType::Rgba8, &blended(&gray, &heat))),
            ("saliency-map", "application/octet-stream", map),
        ];
        for (kind, media_type, bytes) in artefacts {
            result_artefact::Entity::insert(result_artefact::ActiveModel {
                result_id: Set(id.clone()),
                kind: Set(kind.into()),
                media_type: Set(media_type.into()),
                width: Set(WIDTH as i32),
                height: Set(HEIGHT as i32),
                sha256: Set(hex::encode(Sha256::digest(&bytes))),
                bytes: Set(bytes),
                created_at: Set(now),
            })
            .exec_without_returning(db)
            .await?;
        }
    }
    Ok(Some(id))
}
