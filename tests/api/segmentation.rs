//! Segmentation as a first-class output, beside a classifier on the same study. A nodule U-Net
//! (MONAI `BasicUNet` names) is trained here on phantoms and their masks, exported as
//! safetensors and imported with `radsight models import` next to the shipped classifier. A
//! phantom radiograph in the real Orthanc, announced by an ORU, is run through both (their cards'
//! `applies_to` both match): the segmentation result keeps its class map as a picture, its
//! nodule area in mm² from the image's Imager Pixel Spacing, a card row and a FHIR Observation
//! with the area; the SMART app draws the mask's outline in headless Chromium (screenshot in
//! the test's output).

use std::process::Command;
use std::sync::OnceLock;

use radsight::analysis::phantom_dicom::clear_nodule_phantom;
use radsight::results::Finding;
use radsight::store::entities::{analysis_result, result_artefact};
use radsight_vision::segment_train::{SegmenterTraining, train_segmenter};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

use crate::analysis::analysed_study;
use crate::helpers::{Backend, example, run_python};
use crate::smart_ehr::spawn_smart_app_with_pacs;

const SEGMENTER: &str = "test-nodule-unet";
const SIZE: usize = 256;

/// The trained segmenter's weights and description, made once for both backends.
fn trained() -> &'static (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    static TRAINED: OnceLock<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let training = SegmenterTraining::default();
        let trained = train_segmenter(&training, |line| println!("segmenter {line}")).expect("training");
        let tmp = tempfile::tempdir().unwrap();
        let (weights, description) = (tmp.path().join("weights.safetensors"), tmp.path().join("model.toml"));
        trained.save(&weights).unwrap();
        std::fs::write(&description, trained.description(SEGMENTER, training.phantom.size)).unwrap();
        (tmp, weights, description)
    })
}

/// A registry with the shipped classifier and the imported segmenter.
fn registry() -> tempfile::TempDir {
    let (_, weights, description) = trained();
    let registry = crate::helpers::registry_with_shipped_model();
    let stdout = crate::helpers::import_model(registry.path(), weights, description);
    assert!(stdout.contains(&format!("imported {SEGMENTER} 1.0.0 (basic-unet")), "{stdout}");
    registry
}

async fn a_segmentation_model_outlines_a_nodule_with_its_area_beside_the_classifier(backend: Backend) {
    let registry = registry();
    let models = registry.path().to_owned();
    // No routes: both cards' applies_to (CR/DX chest) select the study.
    let (app, ehr) = spawn_smart_app_with_pacs(backend, move |s| s.analysis.models_dir = models).await;

    let phantom = clear_nodule_phantom(SIZE);
    analysed_study(&app, SIZE as u16, phantom.image.data(), "SEG-1").await;

    let results = analysis_result::Entity::find().all(&app.db).await.unwrap();
    let mut models: Vec<&str> = results.iter().filter_map(|r| r.model_id.as_deref()).collect();
    models.sort();
    assert_eq!(models, vec!["radsight-phantom-cxr", SEGMENTER], "a classifier and a segmenter on one study");
    let seg = results.iter().find(|r| r.model_id.as_deref() == Some(SEGMENTER)).unwrap();

    // The nodule's area, from the mask and the Imager Pixel Spacing (430 mm over 256 pixels).
    let findings: Vec<Finding> = serde_json::from_str(&seg.findings).unwrap();
    assert_eq!(findings.len(), 1);
    let nodule = &findings[0];
    assert_eq!((nodule.code.as_str(), nodule.probability), ("nodule", 1.0), "the nodule is outlined: {findings:?}");
    let area = nodule.area.as_ref().expect("an area");
    assert_eq!(area.spacing_source.as_deref(), Some("ImagerPixelSpacing"));
    let mm_per_pixel = 430.0 / SIZE as f64;
    let truth = phantom.masks[0].iter().filter(|m| **m).count() as f64 * mm_per_pixel * mm_per_pixel;
    let measured = area.mm2.expect("mm² from the spacing");
    println!("nodule area: measured {measured:.0} mm², phantom's own mask {truth:.0} mm² ({} model pixels)", area.model_pixels);
    assert!((measured - truth).abs() / truth < 0.5, "measured {measured:.0} mm² against {truth:.0} mm²");
    assert_eq!(nodule.standard.as_ref().map(|c| c.code.as_str()), Some("427359005"));
    let explanation: Value = serde_json::from_str(seg.explanation.as_deref().unwrap()).unwrap();
    assert_eq!(explanation["kind"], "segmentation");
    assert!(seg.deletion_auc.is_none(), "no deletion measure for a mask");
    let kinds: Vec<String> = result_artefact::Entity::find()
        .filter(result_artefact::Column::ResultId.eq(&seg.id))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert!(kinds.contains(&"mask-png".to_owned()) && kinds.contains(&"heatmap-png".to_owned()), "{kinds:?}");

    // The card names the outlined nodule and its area.
    let cards = app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    let card =
        cards.iter().find(|c| c["source"]["topic"]["code"] == SEGMENTER).unwrap_or_else(|| panic!("a card from the segmenter: {cards:#?}"));
    let summary = card["summary"].as_str().unwrap();
    assert!(summary.contains("Nodule outlined") && summary.contains(&format!("{measured:.0} mm² at the detector")), "{summary}");
    assert!(card["detail"].as_str().unwrap().contains("| Region | Area |"), "{}", card["detail"]);
    assert!(cards.iter().any(|c| c["source"]["topic"]["code"] == "radsight-phantom-cxr"), "the classifier's card beside it");

    // The FHIR Bundle validates; the nodule's Observation carries the area in UCUM mm2.
    let path = format!("/results/{}/fhir", seg.id);
    let reply = app.send(reqwest::Method::GET, &path, Some(&app.token(&path)), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (ok, out) = run_python("validate_bundle.py", &reply.text);
    assert!(ok && out.contains("Observation 1"), "{out}");
    let bundle: Value = serde_json::from_str(&reply.text).unwrap();
    let observation =
        bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).find(|r| r["resourceType"] == "Observation").unwrap();
    assert_eq!(observation["valueQuantity"]["code"], "mm2", "{observation}");
    assert!((observation["valueQuantity"]["value"].as_f64().unwrap() - measured).abs() < 1e-3);
    assert_eq!(observation["interpretation"][0]["coding"][0]["code"], "DET");

    // The SMART app outlines the mask over the image.
    let shots = match std::env::var("RADSIGHT_TEST_ARTIFACTS") {
        Ok(dir) => std::path::PathBuf::from(dir).join(format!("segmentation-{backend:?}")),
        Err(_) => std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("segmentation-{backend:?}")),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .args([&format!("{}/tests/browser/segmentation.mjs", env!("CARGO_MANIFEST_DIR")), &ehr.address, &seg.id, shots.to_str().unwrap()])
        .output()
        .expect("node runs (scripts/test.sh installs the browser test dependencies)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("rows: radsight-phantom-cxr,{SEGMENTER}")), "one row per model: {text}");
    let outline: usize = text.split("outline: ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(outline > 8, "the outline is drawn: {text}");
    assert!(text.contains("Nodule") && text.contains("Outlined") && text.contains("explanation: segmentation"), "{text}");
    assert!(shots.join("segmentation.png").is_file());
}

backend_tests!(a_segmentation_model_outlines_a_nodule_with_its_area_beside_the_classifier);
