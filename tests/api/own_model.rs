//! Bring your own model, end to end: a DenseNet-121 shaped like TorchXRayVision's (one input
//! channel, its 18 labels, its [-1024, 1024] intensity range), built in PyTorch with
//! torchvision's random initialisation (nothing can be downloaded here), is exported by
//! `scripts/export_torch.py` and imported with `radsight models import` beside the shipped
//! model. A phantom radiograph stored in the real Orthanc and announced by an ORU is routed to
//! it, and to the shipped model beside it, and reaches stage `analysed` with a result of each;
//! the imported model's card lists its top findings, the FHIR
//! Bundle validates and carries the card's SNOMED CT codes, and the SMART app's API shows the
//! result with its ROAD faithfulness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use radsight::analysis::phantom_dicom::clear_nodule_phantom;
use radsight::configuration::ModelRoute;
use radsight::store::entities::analysis_result;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::Value;

use crate::analysis::analysed_study;
use crate::helpers::{Backend, PATIENT, example, run_python};
use crate::smart_ehr::spawn_smart_app_with_pacs;

const MODEL_ID: &str = "xrv-densenet121-test";

fn torch_python() -> PathBuf {
    let p = std::env::var_os("RADSIGHT_TEST_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"));
    assert!(p.exists(), "PyTorch is needed: {} does not exist (scripts/test.sh's ensure_torch installs it)", p.display());
    p
}

/// The model as its owner would hand it over: the state dict exported by
/// `scripts/export_torch.py` and a description. Made once for both backends.
fn exported() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static EXPORTED: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("densenet121");
        let status = Command::new(torch_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_parity.py"))
            .args(["densenet121", out.to_str().unwrap(), "--export-only"])
            .status()
            .expect("run tests/python/torch_parity.py");
        assert!(status.success(), "exporting the DenseNet failed ({status})");
        // The owner's description, routed to chest radiographs.
        let description = std::fs::read_to_string(out.join("description.toml"))
            .unwrap()
            .replace("id = \"parity-densenet121\"", &format!("id = \"{MODEL_ID}\""))
            + "[applies_to]\nmodalities = [\"CR\", \"DX\"]\nbody_parts = [\"CHEST\"]\n";
        assert!(description.contains(MODEL_ID), "{description}");
        std::fs::write(out.join("description.toml"), description).unwrap();
        (tmp, out.join("weights.safetensors"), out.join("description.toml"))
    })
}

/// A registry holding the shipped model and the imported DenseNet, made with the command line.
fn registry_with_import() -> tempfile::TempDir {
    let (_, weights, description) = exported();
    let registry = crate::helpers::registry_with_shipped_model();
    let stdout = crate::helpers::import_model(registry.path(), weights, description);
    assert!(stdout.contains(&format!("imported {MODEL_ID} 1.0.0 (densenet")), "{stdout}");
    registry
}

async fn a_torchxrayvision_shaped_densenet_imported_from_pytorch_analyses_a_study_from_the_pacs(backend: Backend) {
    let registry = registry_with_import();
    let models = registry.path().to_owned();
    let (app, ehr) = spawn_smart_app_with_pacs(backend, move |s| {
        s.analysis.models_dir = models;
        // Two models for chest radiographs: the imported one and the shipped one.
        let route =
            |model: &str| ModelRoute { modalities: vec!["DX".into()], body_parts: vec![], procedure_codes: vec![], model: model.into() };
        s.analysis.routes = vec![route(MODEL_ID), route("radsight-phantom-cxr"), route(MODEL_ID)];
    })
    .await;
    let list = app.cli(&["models", "list"]);
    assert!(list.stdout.contains(MODEL_ID) && list.stdout.contains("radsight-phantom-cxr"), "both are served: {}", list.stdout);

    let study = analysed_study(&app, 320, &clear_nodule_phantom(320).image.into_data(), "OWN-1").await;
    let jobs = app.jobs().await;

    // One result per model (the route naming the DenseNet twice runs it once), from one job.
    let results = analysis_result::Entity::find().all(&app.db).await.unwrap();
    let mut models: Vec<&str> = results.iter().filter_map(|r| r.model_id.as_deref()).collect();
    models.sort();
    assert_eq!(models, vec!["radsight-phantom-cxr", MODEL_ID], "{results:#?}");
    assert!(results.iter().all(|r| r.status == "done" && r.job_id.as_deref() == Some(jobs[0].id.as_str())));
    let inferences = app.audit_of("model.inference").await;
    assert_eq!(inferences.len(), 2, "an audit entry per model");
    let shipped = results.iter().find(|r| r.model_id.as_deref() == Some("radsight-phantom-cxr")).unwrap();
    assert_eq!(shipped.input_sha256, results.iter().find(|r| r.model_id.as_deref() == Some(MODEL_ID)).unwrap().input_sha256, "same pixels");

    // The imported model's result: its 18 labels, with the card's SNOMED CT codes.
    let r = results.iter().find(|r| r.model_id.as_deref() == Some(MODEL_ID)).unwrap();
    assert_eq!((r.status.as_str(), r.model_id.as_deref(), r.model_version.as_deref()), ("done", Some(MODEL_ID), Some("1.0.0")));
    let findings: Vec<radsight::results::Finding> = serde_json::from_str(&r.findings).unwrap();
    assert_eq!(findings.len(), 18, "TorchXRayVision's 18 labels");
    let pneumothorax = findings.iter().find(|f| f.code == "Pneumothorax").expect("a Pneumothorax finding");
    assert_eq!(pneumothorax.standard.as_ref().map(|c| (c.system.as_str(), c.code.as_str())), Some(("http://snomed.info/sct", "36118008")));
    let explanation: Value = serde_json::from_str(r.explanation.as_deref().unwrap()).unwrap();
    assert_eq!(explanation["letterbox"]["size"], 224, "the model's own input size");
    assert!(explanation["road"]["map"]["combined"].as_f64().is_some(), "ROAD recorded: {explanation}");

    // The order hook's card lists the top findings, not all 18.
    let cards = app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    let card = cards
        .iter()
        .find(|c| c["source"]["topic"]["code"] == MODEL_ID)
        .unwrap_or_else(|| panic!("a card from the imported model: {cards:#?}"));
    assert!(
        cards.iter().any(|c| c["source"]["topic"]["code"] == "radsight-phantom-cxr" && c["summary"].as_str().unwrap().contains("Nodule")),
        "the shipped model's card beside it: {cards:#?}"
    );
    let detail = card["detail"].as_str().unwrap();
    let mut ranked: Vec<&radsight::results::Finding> = findings.iter().collect();
    ranked.sort_by(|a, b| b.is_positive().cmp(&a.is_positive()).then(b.probability.total_cmp(&a.probability)));
    let shown = ranked.iter().filter(|f| f.is_positive()).count().max(6);
    for f in &ranked[..shown] {
        assert!(detail.contains(&format!("| {} | {:.2} |", f.display, f.probability)), "{} is listed: {detail}", f.display);
    }
    for f in &ranked[shown..] {
        assert!(!detail.contains(&format!("| {} |", f.display)), "{} is left to the app: {detail}", f.display);
    }
    if shown < 18 {
        assert!(detail.contains(&format!("| {} more, all below their thresholds |", 18 - shown)), "{detail}");
    }

    // The FHIR Bundle validates, one Observation per label, with the standard codes first.
    let path = format!("/results/{}/fhir", r.id);
    let reply = app.send(reqwest::Method::GET, &path, Some(&app.token(&path)), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (ok, out) = run_python("validate_bundle.py", &reply.text);
    assert!(ok && out.contains("DiagnosticReport 1") && out.contains("Observation 18"), "{out}");
    let bundle: Value = serde_json::from_str(&reply.text).unwrap();
    let observation = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|o| o["resourceType"] == "Observation" && o["code"]["text"] == pneumothorax.display)
        .expect("the Pneumothorax Observation");
    assert_eq!(observation["code"]["coding"][0]["code"], "36118008", "{observation}");

    // The SMART app's API lists both analyses of the study and shows the imported model's.
    let token = ehr.token_for(PATIENT, 300);
    let list: Value = app
        .http
        .get(app.url(&format!("/api/patients/{PATIENT}/studies")))
        .header("x-smart-iss", ehr.sim.iss())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let listed = list["studies"].as_array().unwrap().iter().find(|x| x["studyInstanceUid"] == study.as_str()).expect("the study is listed");
    let mut listed_models: Vec<&str> = listed["analyses"].as_array().unwrap().iter().map(|a| a["modelId"].as_str().unwrap()).collect();
    listed_models.sort();
    assert_eq!(listed_models, vec!["radsight-phantom-cxr", MODEL_ID], "{listed}");
    let resp = app
        .http
        .get(app.url(&format!("/api/results/{}", r.id)))
        .header("x-smart-iss", ehr.sim.iss())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let shown: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(shown["model"]["id"], MODEL_ID);
    assert_eq!(shown["findings"].as_array().map(Vec::len), Some(18));
    assert!(shown["faithfulness"]["road"]["combined"].is_number(), "{}", shown["faithfulness"]);
}

backend_tests!(a_torchxrayvision_shaped_densenet_imported_from_pytorch_analyses_a_study_from_the_pacs);
