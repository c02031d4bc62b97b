//! Parity with PyTorch: torchvision's DenseNet-121 (1 channel, TorchXRayVision's 18 labels and
//! intensity range), EfficientNet-B0 and ResNet-50, and MONAI's BasicUNet, with random weights
//! under a fixed seed, are exported by `scripts/export_torch.py`, imported with
//! [`import_model`], loaded from the registry and compared on the same 5 inputs with what
//! `tests/python/torch_parity.py` computed in PyTorch: logits within 1e-4 (max abs), Grad-CAM
//! against pytorch-grad-cam 1.5.7 on the same layer with Pearson ≥ 0.99, the U-Net mask equal
//! to PyTorch's argmax on ≥ 99.9 % of pixels, and ROAD within 0.02 of pytorch-grad-cam's.
//!
//! These tests need PyTorch: `RADSIGHT_TEST_TORCH_PYTHON` (set by `scripts/test.sh`'s
//! `ensure_torch`), else the workspace's `.venv-test/bin/python`. Without it they fail.
//! `RADSIGHT_TEST_TORCH_REFERENCES=DIR` reuses references written earlier to `DIR/ARCH`.

use radsight_vision::candle_core::{Device, Tensor};
use radsight_vision::import::import_model;
use radsight_vision::road::{RoadOptions, road};
use radsight_vision::segment::SegmentOptions;
use radsight_vision::{GrayImage, Registry, SaliencyMethod};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn torch_python() -> PathBuf {
    let p = std::env::var_os("RADSIGHT_TEST_TORCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace().join(".venv-test/bin/python"));
    assert!(
        p.exists(),
        "PyTorch is needed for the parity tests: {} does not exist (run scripts/test.sh, whose ensure_torch installs it, or set RADSIGHT_TEST_TORCH_PYTHON)",
        p.display()
    );
    p
}

/// Runs the PyTorch side for `arch` into a temporary folder; returns it and the reference tensors.
fn reference(arch: &str) -> (tempfile::TempDir, PathBuf, HashMap<String, Tensor>) {
    let tmp = tempfile::tempdir().unwrap();
    // Developer aid: reuse references made earlier with `torch_parity.py ARCH DIR/ARCH`.
    if let Some(dir) = std::env::var_os("RADSIGHT_TEST_TORCH_REFERENCES") {
        let out = PathBuf::from(dir).join(arch);
        let refs = radsight_vision::candle_core::safetensors::load(out.join("reference.safetensors"), &Device::Cpu).unwrap();
        return (tmp, out, refs);
    }
    let out = tmp.path().join("torch");
    let start = Instant::now();
    let status = Command::new(torch_python())
        .arg(workspace().join("tests/python/torch_parity.py"))
        .arg(arch)
        .arg(&out)
        .status()
        .expect("run tests/python/torch_parity.py");
    assert!(status.success(), "tests/python/torch_parity.py {arch} failed ({status}); is PyTorch installed in the test venv?");
    println!("{arch}: PyTorch reference in {:.1} s", start.elapsed().as_secs_f64());
    let refs = radsight_vision::candle_core::safetensors::load(out.join("reference.safetensors"), &Device::Cpu).unwrap();
    (tmp, out, refs)
}

fn import(tmp: &Path, out: &Path) -> (Registry, String) {
    let reg = tmp.join("models");
    std::fs::create_dir_all(&reg).unwrap();
    let imported = import_model(&out.join("weights.safetensors"), &out.join("description.toml"), &reg).expect("import");
    (Registry::open(&reg).unwrap(), imported.id)
}

fn images(refs: &HashMap<String, Tensor>) -> Vec<GrayImage> {
    let x = &refs["inputs"];
    let (n, _, h, w) = x.dims4().unwrap();
    (0..n).map(|i| GrayImage::new(w, h, x.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap()).unwrap()).collect()
}

pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().map(|&v| v as f64).sum::<f64>() / n, b.iter().map(|&v| v as f64).sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(1e-30)
}

fn check_classifier(arch: &str, check_road: bool) {
    let (tmp, out, refs) = reference(arch);
    let (reg, id) = import(tmp.path(), &out);
    let model = reg.load(&id).unwrap();
    let imgs = images(&refs);
    let refs_img: Vec<&GrayImage> = imgs.iter().collect();
    let ours = model.logits(&refs_img).unwrap();
    let theirs: Vec<Vec<f32>> = refs["logits"].to_vec2().unwrap();
    let mut worst = 0f32;
    let mut scale = 0f32;
    for (a, b) in ours.iter().zip(&theirs) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    println!("{arch}: logits max |radsight − PyTorch| = {worst:.2e} (max |logit| {scale:.3}) on {} images", imgs.len());
    assert!(worst <= 1e-4, "{arch}: logits differ by {worst}");

    let cams: Vec<Vec<Vec<f32>>> = refs["cams"].to_vec3().unwrap();
    let classes: Vec<i64> = refs["classes"].to_vec1().unwrap();
    for (i, img) in imgs.iter().enumerate() {
        let s = model.saliency(img, classes[i] as usize, &SaliencyMethod::GradCam).unwrap();
        let r = pearson(&s.map, &cams[i].concat());
        println!("{arch}: image {i} class {}: Grad-CAM Pearson vs pytorch-grad-cam {r:.5}", classes[i]);
        assert!(r >= 0.99, "{arch} image {i}: Pearson {r}");
    }

    if check_road {
        let morf: Vec<Vec<f32>> = refs["road_morf"].to_vec2().unwrap();
        let lerf: Vec<Vec<f32>> = refs["road_lerf"].to_vec2().unwrap();
        for i in 0..morf.len() {
            let x = model.input_tensor(&[&imgs[i]]).unwrap();
            let map = cams[i].concat();
            let opts = RoadOptions::default();
            let c = classes[i] as usize;
            let score = |z: f32| radsight_vision::metrics::sigmoid(z as f64) as f32;
            let r = road(model.network(), &x, c, &score, &map, &opts).unwrap();
            let mut worst = 0f32;
            for (k, p) in opts.percentiles.iter().enumerate() {
                let (dm, dl) = ((r.morf[k] - morf[i][k]).abs(), (r.lerf[k] - lerf[i][k]).abs());
                println!(
                    "{arch}: image {i} ROAD p{p}: MoRF {:.4} vs {:.4}, LeRF {:.4} vs {:.4}",
                    r.morf[k], morf[i][k], r.lerf[k], lerf[i][k]
                );
                worst = worst.max(dm).max(dl);
            }
            println!("{arch}: image {i} ROAD max |radsight − pytorch-grad-cam| = {worst:.4}");
            assert!(worst <= 0.02, "{arch} image {i}: ROAD differs by {worst}");
        }
    }
}

#[test]
fn densenet121_imported_from_torchvision_matches_pytorch_logits_grad_cam_and_road() {
    check_classifier("densenet121", true);
}

#[test]
fn efficientnet_b0_imported_from_torchvision_matches_pytorch_logits_and_grad_cam() {
    check_classifier("efficientnet_b0", false);
}

#[test]
fn resnet50_imported_from_torchvision_matches_pytorch_logits_and_grad_cam() {
    check_classifier("resnet50", false);
}

#[test]
fn basic_unet_imported_from_monai_matches_pytorch_mask_and_grad_cam() {
    let (tmp, out, refs) = reference("basic_unet");
    let (reg, id) = import(tmp.path(), &out);
    let seg = reg.load_segmenter(&id).unwrap();
    let imgs = images(&refs);
    let masks: Vec<Vec<Vec<i64>>> = refs["mask"].to_vec3().unwrap();
    let logits: Vec<Vec<Vec<Vec<f32>>>> = (0..imgs.len()).map(|i| refs["logits"].get(i).unwrap().to_vec3().unwrap()).collect();
    let cams: Vec<Vec<Vec<f32>>> = refs["cams"].to_vec3().unwrap();
    let classes: Vec<i64> = refs["classes"].to_vec1().unwrap();
    for (i, img) in imgs.iter().enumerate() {
        let ours = seg.logits(img).unwrap();
        let worst =
            ours.iter().flatten().flatten().zip(logits[i].iter().flatten().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let s = seg.segment(img, &SegmentOptions::default()).unwrap();
        let theirs: Vec<u8> = masks[i].concat().iter().map(|&v| v as u8).collect();
        let agree = s.class_map.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / theirs.len() as f64;
        let fg: Vec<usize> = s.regions.iter().map(|r| r.area_px).collect();
        let r = pearson(&s.saliency.map, &cams[i].concat());
        println!(
            "basic_unet image {i}: logits max diff {worst:.2e}, mask agreement {:.5}, areas {fg:?}, Grad-CAM ({}) Pearson {r:.5}",
            agree, s.saliency.label
        );
        assert!(worst <= 1e-4, "U-Net logits differ by {worst}");
        assert!(agree >= 0.999, "mask agreement {agree}");
        assert_eq!(s.saliency.label, seg.card().labels[classes[i] as usize].name, "the same class is explained");
        assert!(r >= 0.99, "U-Net Grad-CAM Pearson {r}");
        assert_eq!(s.mask(classes[i] as usize).iter().filter(|&&m| m).count(), s.regions[classes[i] as usize].area_px);
    }
}
