//! The compact CNN family for 2-core inference: a stack of `k×k` convolutions (stride 1 or 2,
//! "same" padding) each followed by optional BatchNorm and ReLU — no pooling inside the stack —
//! then global average pooling and a linear head. Widths, strides, kernel size and BatchNorm
//! come from the model card.
//!
//! Weight names: without BatchNorm `features.{i}.weight` `(w_i, w_{i-1}, k, k)` and
//! `features.{i}.bias`; with it `features.{i}.conv.weight` (no bias) and
//! `features.{i}.bn.{weight,bias,running_mean,running_var}`; then `head.weight`
//! `(labels, w_last)`, `head.bias`. The input is standardised inside the network with
//! `(x − input_mean) / input_std`, so callers always pass [0, 1] pixels.
//!
//! BatchNorm: [`CompactCnn::new`] (inference) folds each BN into its convolution with the running
//! statistics (`Conv2d::absorb_bn`, exact in eval mode); [`CompactCnn::new_for_training`] keeps
//! them separate so [`CompactCnn::forward_train`] can use batch statistics.

use super::layers::conv2d_as_matmul;
use super::{Network, conv_out, gap_linear};
use candle_core::{Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

/// Architecture hyper-parameters (the card's `[architecture]` table).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompactCnnConfig {
    pub in_channels: usize,
    /// Output channels of each convolution.
    pub widths: Vec<usize>,
    /// Stride of each convolution (1 or 2).
    pub strides: Vec<usize>,
    /// Square kernel side (odd).
    pub kernel: usize,
    pub num_labels: usize,
    pub input_mean: f64,
    pub input_std: f64,
    /// BatchNorm after each convolution (folded at load time).
    #[serde(default)]
    pub batch_norm: bool,
}

impl Default for CompactCnnConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            widths: vec![16, 32, 48, 64],
            strides: vec![2, 2, 1, 1],
            kernel: 3,
            num_labels: 2,
            input_mean: 0.4,
            input_std: 0.2,
            batch_norm: true,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CompactCnn {
    config: CompactCnnConfig,
    convs: Vec<Conv2d>,
    /// Unfolded BatchNorms (training only; empty when folded or absent).
    bns: Vec<BatchNorm>,
    head_w: Tensor,
    head_b: Tensor,
}

impl CompactCnn {
    /// Builds from a `VarBuilder` (safetensors for inference, a `VarMap` for training).
    pub fn new(config: &CompactCnnConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, vb, true)
    }

    /// Builds with BatchNorm kept separate (for [`CompactCnn::forward_train`]); `features`
    /// then applies BN with running statistics.
    pub fn new_for_training(config: &CompactCnnConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, vb, false)
    }

    fn build(config: &CompactCnnConfig, vb: VarBuilder, fold: bool) -> Result<Self> {
        if config.widths.is_empty() || config.widths.len() != config.strides.len() || config.kernel.is_multiple_of(2) {
            candle_core::bail!("compact-cnn: widths and strides must be non-empty and equal in length, kernel odd");
        }
        let mut convs = Vec::with_capacity(config.widths.len());
        let mut bns = Vec::new();
        let mut c_in = config.in_channels;
        for (i, (&w, &s)) in config.widths.iter().zip(&config.strides).enumerate() {
            let cfg = Conv2dConfig { padding: config.kernel / 2, stride: s, ..Default::default() };
            let vbl = vb.pp(format!("features.{i}"));
            if config.batch_norm {
                let conv = candle_nn::conv2d_no_bias(c_in, w, config.kernel, cfg, vbl.pp("conv"))?;
                let bn = candle_nn::batch_norm(w, 1e-5, vbl.pp("bn"))?;
                if fold {
                    convs.push(conv.absorb_bn(&bn)?);
                } else {
                    convs.push(conv);
                    bns.push(bn);
                }
            } else {
                convs.push(candle_nn::conv2d(c_in, w, config.kernel, cfg, vbl)?);
            }
            c_in = w;
        }
        let head_w = vb.get((config.num_labels, c_in), "head.weight")?;
        let head_b = vb.get(config.num_labels, "head.bias")?;
        Ok(Self { config: config.clone(), convs, bns, head_w, head_b })
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.affine(1.0 / self.config.input_std, -self.config.input_mean / self.config.input_std)?;
        for (i, (conv, &stride)) in self.convs.iter().zip(&self.config.strides).enumerate() {
            h = conv2d_as_matmul(&h, conv.weight(), conv.bias(), stride, self.config.kernel / 2)?;
            if let Some(bn) = self.bns.get(i) {
                h = bn.forward_t(&h, train)?;
            }
            h = h.relu()?;
        }
        Ok(h)
    }

    /// Logits with BatchNorm in training mode (batch statistics, running statistics updated).
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.run(x, true)?)
    }

    pub fn config(&self) -> &CompactCnnConfig {
        &self.config
    }

    /// The head's weight `(labels, K)` (the CAM oracle needs it).
    pub fn head_weight(&self) -> &Tensor {
        &self.head_w
    }
}

impl Network for CompactCnn {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }

    fn head(&self, a: &Tensor) -> Result<Tensor> {
        gap_linear(a, &self.head_w, &self.head_b)
    }

    fn target_layer(&self) -> String {
        format!("features.{}", self.convs.len() - 1)
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    /// Every convolution has an odd kernel, "same" padding `k/2` and stride `s`, so output `i`
    /// is centred on input pixel `s·i`; composed, feature cell `i` is centred on input pixel
    /// `S·i` (centre `S·i + 0.5`), not on `S·i + (S − 1)/2` as half-pixel resizing assumes — a
    /// shift of 1.5 px at stride 4 and 3.5 px at stride 8.
    fn feature_origin(&self) -> Option<f32> {
        Some(0.5)
    }

    fn macs(&self, size: usize) -> u64 {
        let k = self.config.kernel;
        let mut side = size;
        let mut c_in = self.config.in_channels;
        let mut total = 0u64;
        for (&w, &s) in self.config.widths.iter().zip(&self.config.strides) {
            side = conv_out(side, k, s, k / 2);
            total += (side * side * w * c_in * k * k) as u64;
            c_in = w;
        }
        total + (c_in * self.config.num_labels) as u64
    }
}
