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
use radsight_vision::segment::SegmentOptions;
use radsight_vision::{GrayImage, Registry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn torch_python() -> PathBuf {
    let p = std::env::var_os("RADSIGHT_TEST_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv-test/bin/python"));
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
        let refs = radsight_vision::candle_core::safetensors::load(
            out.join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
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
    assert!(
        status.success(),
        "tests/python/torch_parity.py {arch} failed ({status}); is PyTorch installed in the test venv?"
    );
    println!(
        "{arch}: PyTorch reference in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let refs = radsight_vision::candle_core::safetensors::load(
        out.join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    (tmp, out, refs)
}

fn import(tmp: &Path, out: &Path) -> (Registry, String) {
    let reg = tmp.join("models");
    std::fs::create_dir_all(&reg).unwrap();
    let imported = import_model(
        &out.join("weights.safetensors"),
        &out.join("description.toml"),
        &reg,
    )
    .expect("import");
    (Registry::open(&reg).unwrap(), imported.id)
}

fn images(refs: &HashMap<String, Tensor>) -> Vec<GrayImage> {
    let x = &refs["inputs"];
    let (n, _, h, w) = x.dims4().unwrap();
    (0..n)
        .map(|i| {
            GrayImage::new(
                w,
                h,
                x.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap(),
            )
            .unwrap()
        })
        .collect()
}

pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(1e-30)
}

#[test]
fn basic_unet_imported_from_monai_matches_pytorch_mask_and_grad_cam() {
    let (tmp, out, refs) = reference("basic_unet");
    let (reg, id) = import(tmp.path(), &out);
    let seg = reg.load_segmenter(&id).unwrap();
    let imgs = images(&refs);
    let masks: Vec<Vec<Vec<i64>>> = refs["mask"].to_vec3().unwrap();
    let logits: Vec<Vec<Vec<Vec<f32>>>> = (0..imgs.len())
        .map(|i| refs["logits"].get(i).unwrap().to_vec3().unwrap())
        .collect();
    let cams: Vec<Vec<Vec<f32>>> = refs["cams"].to_vec3().unwrap();
    let classes: Vec<i64> = refs["classes"].to_vec1().unwrap();
    for (i, img) in imgs.iter().enumerate() {
        let ours = seg.logits(img).unwrap();
        let worst = ours
            .iter()
            .flatten()
            .flatten()
            .zip(logits[i].iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let s = seg.segment(img, &SegmentOptions::default()).unwrap();
        let theirs: Vec<u8> = masks[i].concat().iter().map(|&v| v as u8).collect();
        let agree = s
            .class_map
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a == b)
            .count() as f64
            / theirs.len() as f64;
        let fg: Vec<usize> = s.regions.iter().map(|r| r.area_px).collect();
        let r = pearson(&s.saliency.map, &cams[i].concat());
        println!(
            "basic_unet image {i}: logits max diff {worst:.2e}, mask agreement {:.5}, areas {fg:?}, Grad-CAM ({}) Pearson {r:.5}",
            agree, s.saliency.label
        );
        assert!(worst <= 1e-4, "U-Net logits differ by {worst}");
        assert!(agree >= 0.999, "mask agreement {agree}");
        assert_eq!(
            s.saliency.label,
            seg.card().labels[classes[i] as usize].name,
            "the same class is explained"
        );
        assert!(r >= 0.99, "U-Net Grad-CAM Pearson {r}");
        assert_eq!(
            s.mask(classes[i] as usize).iter().filter(|&&m| m).count(),
            s.regions[classes[i] as usize].area_px
        );
    }
}
