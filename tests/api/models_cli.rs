//! The model registry and local analysis from the command line: `models list|verify|phantoms`
//! and `analyze` on a folder, with its pictures, report and audit entry; a tampered model and a
//! file that is not DICOM each give a clear error and a non-zero exit.

use serde_json::Value;

use crate::helpers::{Backend, spawn_app, spawn_app_with};

async fn the_registry_lists_and_verifies_the_shipped_model(backend: Backend) {
    let app = spawn_app(backend).await;
    let list = app.cli(&["models", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("radsight-phantom-cxr") && list.stdout.contains("compact-cnn") && list.stdout.contains("demonstration"),
        "{}",
        list.stdout
    );
    let verify = app.cli(&["models", "verify"]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.starts_with("ok        radsight-phantom-cxr"), "{}", verify.stdout);
}

async fn a_tampered_registry_fails_verification(backend: Backend) {
    let registry = crate::analysis::tampered_registry();
    let app = spawn_app_with(backend, |s| s.analysis.models_dir = registry.path().to_owned()).await;
    let verify = app.cli(&["models", "verify"]);
    assert_eq!(verify.code, 1);
    assert!(verify.stdout.contains("REFUSED   radsight-phantom-cxr") && verify.stdout.contains("SHA-256"), "{}", verify.stdout);
}

async fn analyze_runs_the_pipeline_on_a_folder_and_audits_the_run(backend: Backend) {
    let app = spawn_app(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let phantoms = dir.path().join("phantoms");
    let made = app.cli(&["models", "phantoms", "--out", phantoms.to_str().unwrap(), "--count", "3", "--size", "160"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let out = dir.path().join("out");
    let run = app.cli(&["analyze", phantoms.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Nodule") && run.stdout.contains("deletion AUC"), "{}", run.stdout);
    assert!(run.stderr.contains("[##############################] 3/3"), "a progress bar: {}", run.stderr);

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "truth.json is not taken for an image");
    for r in results {
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["model"]["id"], "radsight-phantom-cxr");
        assert_eq!(r["findings"].as_array().unwrap().len(), 2);
        for file in r["outputs"].as_array().unwrap() {
            let bytes = std::fs::read(out.join(file.as_str().unwrap())).unwrap();
            assert!(!bytes.is_empty());
        }
    }
    let overlay = std::fs::read(out.join("0001-phantom-0001.saliency.png")).unwrap();
    assert_eq!(&overlay[..8], b"\x89PNG\r\n\x1a\n");
    let runs = app.audit_of("analyze.run").await;
    assert_eq!(runs.len(), 1);
    let detail: Value = serde_json::from_str(&runs[0].detail).unwrap();
    assert_eq!((detail["files"].as_u64(), detail["analysed"].as_u64()), (Some(3), Some(3)));
    assert!(!runs[0].detail.contains("phantom-0001"), "file names stay out of the trail: {}", runs[0].detail);

    // A file that is not DICOM gets a clear error and a non-zero exit, and is audited.
    let junk = dir.path().join("notes.dcm");
    std::fs::write(&junk, b"not a DICOM file at all").unwrap();
    let bad = app.cli(&["analyze", junk.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stdout.contains("FAILED: the image could not be decoded"), "{}", bad.stdout);
    assert_eq!(app.audit_of("analyze.run").await.len(), 2);
}

const TINY_UNET: &str = r#"
id = "tiny-unet"
version = "1.0.0"
name = "tiny U-Net"
architecture = "basic_unet"
unet_features = [4, 4, 8, 8, 16, 4]
[input]
size = 32
channels = 1
[[labels]]
name = "lesion"
code = { system = "http://radlex.org", code = "RID38780", display = "lesion" }
"#;

/// Weights with the names and shapes the description's architecture asks for.
fn tiny_weights(dir: &std::path::Path, description: &str) -> std::path::PathBuf {
    use radsight_vision::candle_core::{Device, Tensor};
    let d: radsight_vision::import::ModelDescription = toml::from_str(description).unwrap();
    let arch = radsight_vision::import::architecture_of(&d).unwrap();
    let tensors: std::collections::HashMap<String, Tensor> = radsight_vision::import::expected_tensors(&arch)
        .unwrap()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|k| ((k % 17) as f32 - 8.0) / 40.0).collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect();
    let path = dir.join("weights.safetensors");
    radsight_vision::candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

async fn a_pytorch_model_is_imported_from_the_command_line_and_bad_descriptions_are_refused(backend: Backend) {
    let registry = tempfile::tempdir().unwrap();
    let models = registry.path().to_owned();
    let app = spawn_app_with(backend, move |s| {
        s.analysis.models_dir = models;
        s.jobs.workers = 0;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_weights(dir.path(), TINY_UNET);
    let description = dir.path().join("model.toml");
    std::fs::write(&description, TINY_UNET).unwrap();
    let import = app.cli(&["models", "import", weights.to_str().unwrap(), description.to_str().unwrap()]);
    assert_eq!(import.code, 0, "{}{}", import.stdout, import.stderr);
    assert!(import.stdout.contains("imported tiny-unet 1.0.0 (basic-unet"), "{}", import.stdout);
    let list = app.cli(&["models", "list"]);
    assert!(list.stdout.contains("tiny-unet") && list.stdout.contains("basic-unet"), "{}", list.stdout);
    assert_eq!(app.cli(&["models", "verify"]).code, 0);

    let unlabelled = TINY_UNET.split("[[labels]]").next().unwrap().replace("tiny-unet", "tiny-unet-2");
    std::fs::write(&description, &unlabelled).unwrap();
    let refused = app.cli(&["models", "import", weights.to_str().unwrap(), description.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("import refused"), "{}", refused.stderr);
    assert!(!registry.path().join("tiny-unet-2").exists(), "nothing is written for a refused import");
}

backend_tests!(
    a_pytorch_model_is_imported_from_the_command_line_and_bad_descriptions_are_refused,
    the_registry_lists_and_verifies_the_shipped_model,
    a_tampered_registry_fails_verification,
    analyze_runs_the_pipeline_on_a_folder_and_audits_the_run,
);
