//! Building blocks shared by the imported architectures: a convolution with its BatchNorm
//! folded in, a BatchNorm kept as a per-channel affine map (where no convolution precedes it),
//! and the torchvision weight-name conventions they load from.
//!
//! BatchNorm is inference-only everywhere: `y = (x − μ) / √(σ² + ε) · γ + β` with the running
//! statistics, which is exact in eval mode. Folding it into the preceding convolution
//! (`Conv2d::absorb_bn`) removes one pass over the activations per layer.

use super::conv_out;
use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};

/// A convolution (optionally grouped) with its BatchNorm folded in.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    conv: Conv2d,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub groups: usize,
}

/// Shape and placement of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl ConvSpec {
    /// "Same" padding (`kernel / 2`), no groups.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        Self { c_in, c_out, kernel, stride, padding: kernel / 2, groups: 1 }
    }
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
}

impl ConvBn {
    /// Loads `{conv}.weight` (no bias) and the BatchNorm `{bn}.*` with `eps`, and folds them.
    pub fn load(vb: &VarBuilder, conv: &str, bn: &str, spec: ConvSpec, eps: f64) -> Result<Self> {
        let cfg = Conv2dConfig { padding: spec.padding, stride: spec.stride, groups: spec.groups, ..Default::default() };
        let c = candle_nn::conv2d_no_bias(spec.c_in, spec.c_out, spec.kernel, cfg, vb.pp(conv))?;
        let b = candle_nn::batch_norm(spec.c_out, eps, vb.pp(bn))?;
        Ok(Self {
            conv: c.absorb_bn(&b)?,
            kernel: spec.kernel,
            stride: spec.stride,
            padding: spec.padding,
            c_in: spec.c_in,
            c_out: spec.c_out,
            groups: spec.groups,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }

    /// Multiply-accumulates at input side `side_in`, and the output side.
    pub fn macs(&self, side_in: usize) -> (u64, usize) {
        let side = conv_out(side_in, self.kernel, self.stride, self.padding);
        ((side * side * self.c_out * (self.c_in / self.groups) * self.kernel * self.kernel) as u64, side)
    }
}

/// A plain convolution without BatchNorm (`{name}.weight`, optional `{name}.bias`).
pub(crate) fn conv(vb: &VarBuilder, name: &str, spec: ConvSpec, bias: bool) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: spec.padding, stride: spec.stride, groups: spec.groups, ..Default::default() };
    if bias {
        candle_nn::conv2d(spec.c_in, spec.c_out, spec.kernel, cfg, vb.pp(name))
    } else {
        candle_nn::conv2d_no_bias(spec.c_in, spec.c_out, spec.kernel, cfg, vb.pp(name))
    }
}

/// A BatchNorm in eval mode as `x · scale + shift` per channel (used where no convolution
/// precedes it, e.g. DenseNet's pre-activation norms on concatenated features).
#[derive(Debug, Clone)]
pub(crate) struct BnAffine {
    scale: Tensor,
    shift: Tensor,
}

impl BnAffine {
    pub fn load(vb: &VarBuilder, name: &str, channels: usize, eps: f64) -> Result<Self> {
        let vb = vb.pp(name);
        let w = vb.get(channels, "weight")?;
        let b = vb.get(channels, "bias")?;
        let mean = vb.get(channels, "running_mean")?;
        let var = vb.get(channels, "running_var")?;
        let scale = w.div(&(var + eps)?.sqrt()?)?;
        let shift = b.sub(&mean.mul(&scale)?)?;
        Ok(Self { scale: scale.reshape((1, channels, 1, 1))?, shift: shift.reshape((1, channels, 1, 1))? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// `(x − mean) / std` per channel, for the standardisation each network applies to its
/// [0, 1] input.
pub(crate) fn standardise(x: &Tensor, mean: &[f32], std: &[f32]) -> Result<Tensor> {
    let c = mean.len();
    let dev = x.device();
    let m = Tensor::from_slice(mean, (1, c, 1, 1), dev)?;
    let s = Tensor::from_slice(std, (1, c, 1, 1), dev)?;
    x.broadcast_sub(&m)?.broadcast_div(&s)
}

/// 3×3/2 max-pool with padding 1 on a non-negative input (after ReLU zero padding is exact).
pub(crate) fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)
}
