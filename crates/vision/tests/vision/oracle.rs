//! Closed-form checks: Grad-CAM = CAM/Z with a GAP + linear head, IG completeness, BN folding.

use crate::helpers::*;
use radsight_vision::candle_core::{DType, Device, Tensor};
use radsight_vision::candle_nn::{VarBuilder, VarMap};
use radsight_vision::nn::Network;
use radsight_vision::nn::compact::{CompactCnn, CompactCnnConfig};
use radsight_vision::phantom::{PhantomConfig, generate};
use radsight_vision::saliency::{grad_cam_raw, integrated_gradients_raw};
use radsight_vision::train::{batch_tensor, init_vars};

fn check_grad_cam_equals_cam(net: &CompactCnn, x: &Tensor) {
    let head_w: Vec<Vec<f32>> = net.head_weight().to_vec2().unwrap();
    for class in 0..head_w.len() {
        let raw = grad_cam_raw(net, x, class).unwrap();
        let a: Vec<Vec<Vec<f32>>> = raw.activations.squeeze(0).unwrap().to_vec3().unwrap();
        let z = (raw.h * raw.w) as f32;
        let mut worst = 0f32;
        for i in 0..raw.h {
            for j in 0..raw.w {
                let cam: f32 = (0..a.len()).map(|k| head_w[class][k] * a[k][i][j]).sum::<f32>() / z;
                worst = worst.max((raw.map[i * raw.w + j] - cam.max(0.0)).abs());
            }
        }
        assert!(worst <= 1e-5, "class {class}: max |Grad-CAM − CAM/Z| = {worst}");
        for (k, &alpha) in raw.alpha.iter().enumerate() {
            assert!((alpha - head_w[class][k] / z).abs() <= 1e-7, "alpha_{k} = {alpha} vs W/Z = {}", head_w[class][k] / z);
        }
    }
}

#[test]
fn grad_cam_equals_cam_over_z_for_the_committed_model() {
    let (card, tensors) = committed_tensors();
    let net = compact_from(&card, tensors);
    let p = generate(&PhantomConfig::default(), TEST_SEED, 0);
    check_grad_cam_equals_cam(&net, &batch_tensor(&[&p.image], 1, &Device::Cpu).unwrap());
}

#[test]
fn grad_cam_equals_cam_over_z_for_a_random_network() {
    let varmap = VarMap::new();
    let cfg = CompactCnnConfig { widths: vec![8, 12, 16], strides: vec![2, 2, 1], batch_norm: false, ..Default::default() };
    let net = CompactCnn::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    init_vars(&varmap, 5).unwrap();
    let p = generate(&PhantomConfig { size: 48, ..Default::default() }, 1, 1);
    check_grad_cam_equals_cam(&net, &batch_tensor(&[&p.image], 1, &Device::Cpu).unwrap());
}

#[test]
fn folded_batch_norm_gives_the_same_logits_as_batch_norm_in_eval_mode() {
    let (card, tensors) = committed_tensors();
    let radsight_vision::card::Architecture::CompactCnn(cfg) = &card.architecture else { unreachable!() };
    assert!(cfg.batch_norm);
    let folded = compact_from(&card, tensors.clone());
    let unfolded = CompactCnn::new_for_training(cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap();
    let ph: Vec<_> = (0..4).map(|i| generate(&PhantomConfig::default(), TEST_SEED, i)).collect();
    let x = batch_tensor(&ph.iter().map(|p| &p.image).collect::<Vec<_>>(), 1, &Device::Cpu).unwrap();
    let a: Vec<Vec<f32>> = folded.forward(&x).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = unfolded.forward(&x).unwrap().to_vec2().unwrap();
    for (ra, rb) in a.iter().zip(&b) {
        for (va, vb) in ra.iter().zip(rb) {
            assert!((va - vb).abs() < 1e-3, "{va} vs {vb}");
        }
    }
}

#[test]
fn integrated_gradients_attributions_sum_to_the_logit_difference_within_5_percent() {
    let model = model();
    let cfg = PhantomConfig::default();
    let mut checked = 0;
    for i in 0..40 {
        let p = generate(&cfg, TEST_SEED + 1, i);
        let Some(class) = p.labels.iter().position(|&l| l) else {
            continue;
        };
        let x = model.input_tensor(&[&p.image]).unwrap();
        let (_, c) = integrated_gradients_raw(model.network(), &x, class, 512, 0.0).unwrap();
        let rel = ((c.attribution_sum - c.logit_difference) / c.logit_difference).abs();
        println!("image {i} class {class}: sum {:.4} vs f(x)-f(b) {:.4} (rel. error {:.4})", c.attribution_sum, c.logit_difference, rel);
        assert!(rel <= 0.05, "completeness off by {:.1}% on image {i}", rel * 100.0);
        checked += 1;
        if checked == 4 {
            break;
        }
    }
    assert_eq!(checked, 4);
}
