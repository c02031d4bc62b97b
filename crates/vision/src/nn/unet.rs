//! A 2-D U-Net with MONAI's `BasicUNet` layout and weight names (default features
//! `(32, 32, 64, 128, 256, 32)`, instance norm with affine, LeakyReLU 0.1, transposed-conv
//! upsampling, bias everywhere, no dropout at inference).
//!
//! Weight names: `conv_0.conv_{0,1}.conv.{weight,bias}` and `.adn.N.{weight,bias}` (the
//! instance norm), `down_{1..4}.convs.conv_{0,1}.*`, `upcat_{4..1}.upsample.deconv.{weight,bias}`
//! and `upcat_{4..1}.convs.conv_{0,1}.*`, `final_conv.{weight,bias}`.
//!
//! Split for saliency: `features(x)` is the output of `upcat_1` (the last decoder block, at
//! input resolution); `head` is `final_conv`, giving per-pixel logits `(B, classes, H, W)`.
//! Grad-CAM of a mask score `Σ_ij logit_c(i, j) · mask_ij` (pytorch-grad-cam's
//! `SemanticSegmentationTarget`) backpropagates through the head only.
//!
//! Input sides must be multiples of 16 (MONAI pads odd sizes; radsight's inputs are square and
//! fixed by the card, so it refuses instead).

use super::layers::{conv2d_as_matmul, standardise};
use candle_core::{D, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

const IN_EPS: f64 = 1e-5;
const LEAKY_SLOPE: f64 = 0.1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BasicUNetConfig {
    pub in_channels: usize,
    /// Output channels including background (channel 0).
    pub out_channels: usize,
    /// MONAI's six feature counts.
    pub features: Vec<usize>,
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
}

impl BasicUNetConfig {
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            features: vec![32, 32, 64, 128, 256, 32],
            input_mean: vec![0.0; in_channels],
            input_std: vec![1.0; in_channels],
        }
    }
}

/// MONAI `Convolution`: 3×3 conv with bias, instance norm (affine), LeakyReLU.
#[derive(Debug, Clone)]
struct ConvNormAct {
    conv: Conv2d,
    gamma: Tensor,
    beta: Tensor,
}

impl ConvNormAct {
    fn load(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let conv = candle_nn::conv2d(c_in, c_out, 3, cfg, vb.pp("conv"))?;
        let n = vb.pp("adn.N");
        let gamma = n.get(c_out, "weight")?.reshape((1, c_out, 1, 1))?;
        let beta = n.get(c_out, "bias")?.reshape((1, c_out, 1, 1))?;
        Ok(Self { conv, gamma, beta })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = conv2d_as_matmul(x, self.conv.weight(), self.conv.bias(), 1, 1)?;
        let (b, c, hh, ww) = h.dims4()?;
        let flat = h.reshape((b, c, hh * ww))?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + IN_EPS)?.sqrt()?)?.reshape((b, c, hh, ww))?;
        let y = normed.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?;
        y.maximum(&(&y * LEAKY_SLOPE)?)
    }
}

// The convolutions are written as matrix products. candle's CPU backend computes a conv2d's
// input gradient, and a conv_transpose2d's forward, with a direct loop of dot products: in a
// profile of U-Net training 3/4 of the time went to `vec_dot_f32` and 1.5 % to GEMM. As matrix
// products (`layers::conv2d_as_matmul` for the 3×3 and 1×1 convolutions, a reshape for the 2×2
// stride-2 transposed convolution) forward and backward both run on GEMM. The results equal
// candle's convolutions up to summation order (the parity tests compare with PyTorch).

/// Transposed convolution with a 2×2 kernel and stride 2 (no overlap): `weight` `(C, O, 2, 2)`;
/// output pixel `(2i + ky, 2j + kx)` is `Σ_c x[c, i, j] · weight[c, o, ky, kx]`.
fn deconv2x2(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let o = weight.dim(1)?;
    let rows = x.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
    let y = rows.broadcast_matmul(&weight.reshape((c, o * 4))?)?; // (B, HW, O·2·2)
    let y = y.reshape((b, h, w, o, 2, 2))?.permute((0, 3, 1, 4, 2, 5))?.reshape((b, o, 2 * h, 2 * w))?;
    add_bias(y, bias)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

#[derive(Debug, Clone)]
struct TwoConv(ConvNormAct, ConvNormAct);

impl TwoConv {
    fn load(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self(ConvNormAct::load(&vb.pp("conv_0"), c_in, c_out)?, ConvNormAct::load(&vb.pp("conv_1"), c_out, c_out)?))
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.1.forward(&self.0.forward(x)?)
    }
    fn macs(&self, hw: u64) -> u64 {
        let w = |c: &ConvNormAct| c.conv.weight().elem_count() as u64;
        hw * (w(&self.0) + w(&self.1))
    }
}

#[derive(Debug, Clone)]
struct UpCat {
    up: ConvTranspose2d,
    convs: TwoConv,
}

impl UpCat {
    fn load(vb: &VarBuilder, c_in: usize, c_cat: usize, c_out: usize, halves: bool) -> Result<Self> {
        let c_up = if halves { c_in / 2 } else { c_in };
        let cfg = ConvTranspose2dConfig { stride: 2, ..Default::default() };
        let up = candle_nn::conv_transpose2d(c_in, c_up, 2, cfg, vb.pp("upsample.deconv"))?;
        Ok(Self { up, convs: TwoConv::load(&vb.pp("convs"), c_cat + c_up, c_out)? })
    }
    fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let u = deconv2x2(x, self.up.weight(), self.up.bias())?;
        self.convs.forward(&Tensor::cat(&[skip, &u], 1)?)
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BasicUNet {
    config: BasicUNetConfig,
    conv_0: TwoConv,
    downs: Vec<TwoConv>,
    ups: Vec<UpCat>,
    final_conv: Conv2d,
}

impl BasicUNet {
    pub fn new(config: &BasicUNetConfig, vb: VarBuilder) -> Result<Self> {
        let f = &config.features;
        if f.len() != 6 {
            candle_core::bail!("basic-unet: features needs 6 values, got {}", f.len());
        }
        if config.out_channels < 2 {
            candle_core::bail!("basic-unet: out_channels must include background and at least one class");
        }
        if config.input_mean.len() != config.in_channels || config.input_std.len() != config.in_channels {
            candle_core::bail!("basic-unet: input_mean/input_std need one value per input channel");
        }
        let conv_0 = TwoConv::load(&vb.pp("conv_0"), config.in_channels, f[0])?;
        let downs = (1..=4).map(|i| TwoConv::load(&vb.pp(format!("down_{i}.convs")), f[i - 1], f[i])).collect::<Result<Vec<_>>>()?;
        let ups = vec![
            UpCat::load(&vb.pp("upcat_4"), f[4], f[3], f[3], true)?,
            UpCat::load(&vb.pp("upcat_3"), f[3], f[2], f[2], true)?,
            UpCat::load(&vb.pp("upcat_2"), f[2], f[1], f[1], true)?,
            UpCat::load(&vb.pp("upcat_1"), f[1], f[0], f[5], false)?,
        ];
        let final_conv = candle_nn::conv2d(f[5], config.out_channels, 1, Default::default(), vb.pp("final_conv"))?;
        Ok(Self { config: config.clone(), conv_0, downs, ups, final_conv })
    }

    pub fn config(&self) -> &BasicUNetConfig {
        &self.config
    }

    /// The output of `upcat_1` `(B, features[5], H, W)` for a [0, 1] input `(B, C, H, W)`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h % 16 != 0 || w % 16 != 0 {
            candle_core::bail!("basic-unet: input {w}x{h} is not a multiple of 16");
        }
        let x = standardise(x, &self.config.input_mean, &self.config.input_std)?;
        let mut skips = vec![self.conv_0.forward(&x)?];
        for d in &self.downs {
            let prev = skips.last().expect("conv_0 output");
            skips.push(d.forward(&prev.max_pool2d(2)?)?);
        }
        let mut u = skips.pop().expect("down_4 output");
        for up in &self.ups {
            let skip = skips.pop().expect("one skip per level");
            u = up.forward(&u, &skip)?;
        }
        Ok(u)
    }

    /// Per-pixel logits `(B, out_channels, H, W)` from [`BasicUNet::features`].
    pub fn head(&self, a: &Tensor) -> Result<Tensor> {
        conv2d_as_matmul(a, self.final_conv.weight(), self.final_conv.bias(), 1, 0)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.features(x)?)
    }

    pub fn target_layer(&self) -> String {
        "upcat_1".into()
    }

    pub fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    pub fn macs(&self, size: usize) -> u64 {
        let mut total = self.conv_0.macs((size * size) as u64);
        let mut side = size;
        for d in &self.downs {
            side /= 2;
            total += d.macs((side * side) as u64);
        }
        for u in &self.ups {
            total += (side * side) as u64 * u.up.weight().elem_count() as u64;
            side *= 2;
            total += u.convs.macs((side * side) as u64);
        }
        total + (side * side) as u64 * self.final_conv.weight().elem_count() as u64
    }
}
