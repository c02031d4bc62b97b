//! Building blocks shared by the imported architectures: a convolution with its BatchNorm
//! folded in, a BatchNorm kept as a per-channel affine map (where no convolution precedes it),
//! and the torchvision weight-name conventions they load from.
//!
//! BatchNorm is inference-only everywhere: `y = (x − μ) / √(σ² + ε) · γ + β` with the running
//! statistics, which is exact in eval mode. Folding it into the preceding convolution
//! (`Conv2d::absorb_bn`) removes one pass over the activations per layer.

use super::conv_out;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
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
        if self.groups == 1 {
            conv2d_as_matmul(x, self.conv.weight(), self.conv.bias(), self.stride, self.padding)
        } else {
            self.conv.forward(x)
        }
    }

    /// Multiply-accumulates at input side `side_in`, and the output side.
    pub fn macs(&self, side_in: usize) -> (u64, usize) {
        let side = conv_out(side_in, self.kernel, self.stride, self.padding);
        ((side * side * self.c_out * (self.c_in / self.groups) * self.kernel * self.kernel) as u64, side)
    }
}

/// A convolution (no groups, no dilation) as one matrix product: `weight` `(O, C, k, k)` times
/// the im2col of `x` `(B, C, H, W)`, plus `bias` `(O)`.
///
/// Why not candle's `conv2d`: its CPU kernel (`conv2d_tiled`, candle 0.11) converts the input to
/// NHWC and the kernel to `[O, k·k·C]` element by element on every call and gathers and scatters
/// a small im2col tile around each GEMM; in a profile of ResNet-50 that cost as much as the GEMM
/// itself. Here the im2col is one pass over the input ([`Im2Col`], with its exact backward) and
/// the product one batched GEMM whose output is already NCHW, so training and input gradients
/// work as before. Results equal candle's up to summation order.
pub(crate) fn conv2d_as_matmul(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, c_w, k, k_w) = weight.dims4()?;
    if c_w != c || k_w != k || stride == 0 || h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!("conv2d_as_matmul: weight {:?} does not fit input {:?} (stride {stride})", weight.dims(), x.dims());
    }
    let (ho, wo) = (conv_out(h, k, stride, padding), conv_out(w, k, stride, padding));
    let cols = if k == 1 && stride == 1 && padding == 0 {
        x.reshape((b, c, h * w))?
    } else {
        x.contiguous()?.apply_op1(Im2Col { k, stride, padding })?
    };
    let y = weight.reshape((o, c * k * k))?.broadcast_matmul(&cols)?.reshape((b, o, ho, wo))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

/// im2col of a contiguous f32 `(B, C, H, W)` for a `k×k` kernel with zero padding: `(B, C·k²,
/// ho·wo)`, row `c·k² + ky·k + kx` holding input pixel `(s·i + ky − p, s·j + kx − p)` at column
/// `i·wo + j` (zero outside the image): the weight's `(C, k, k)` order, so that
/// `weight (O, C·k²) × cols` is the convolution in NCHW.
struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
}

impl Im2Col {
    /// The output columns `j` whose input column `s·j + kx − p` lies in `0..w`.
    fn valid(&self, kx: usize, w: usize, wo: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.padding);
        let first = p.saturating_sub(kx).div_ceil(s);
        let end = if w + p > kx { ((w + p - kx - 1) / s + 1).min(wo) } else { 0 };
        first..end.max(first)
    }

    /// Visits every (input plane, cols block) pair and, within it, every kernel offset's output
    /// row `i` with the input row it reads and the valid output columns.
    fn for_each_row(&self, h: usize, w: usize, mut visit: impl FnMut(usize, usize, usize, usize, std::ops::Range<usize>)) {
        let (k, s, p) = (self.k, self.stride, self.padding);
        let (ho, wo) = (conv_out(h, k, s, p), conv_out(w, k, s, p));
        for ky in 0..k {
            for kx in 0..k {
                let cols = self.valid(kx, w, wo);
                for i in 0..ho {
                    let Some(y) = (i * s + ky).checked_sub(p).filter(|&y| y < h) else { continue };
                    visit(ky * k + kx, i, y, kx, cols.clone());
                }
            }
        }
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: a contiguous f32 tensor is required"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "radsight-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let src = contiguous_f32(storage, layout, "im2col")?;
        let (k, s, p) = (self.k, self.stride, self.padding);
        let (ho, wo) = (conv_out(h, k, s, p), conv_out(w, k, s, p));
        let n = ho * wo;
        let mut dst = vec![0f32; b * c * k * k * n];
        for (plane, block) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(k * k * n)) {
            self.for_each_row(h, w, |row, i, y, kx, cols| {
                let out = &mut block[row * n + i * wo..][..wo];
                let input = &plane[y * w..][..w];
                if s == 1 {
                    // Column j reads input column j + kx − p: one contiguous run.
                    out[cols.clone()].copy_from_slice(&input[cols.start + kx - p..cols.end + kx - p]);
                } else {
                    for j in cols {
                        out[j] = input[j * s + kx - p];
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dst), Shape::from((b, c * k * k, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let col2im = Col2Im { im2col: Im2Col { k: self.k, stride: self.stride, padding: self.padding }, h, w };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&col2im)?))
    }
}

/// The adjoint of [`Im2Col`]: each column entry added back onto the input pixel it was read from.
struct Col2Im {
    im2col: Im2Col,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "radsight-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, ckk, n) = layout.shape().dims3()?;
        let src = contiguous_f32(storage, layout, "col2im")?;
        let Im2Col { k, stride: s, padding: p } = self.im2col;
        let (h, w) = (self.h, self.w);
        let c = ckk / (k * k);
        let wo = conv_out(w, k, s, p);
        let mut dst = vec![0f32; b * c * h * w];
        for (block, plane) in src.chunks_exact(k * k * n).zip(dst.chunks_exact_mut(h * w)) {
            self.im2col.for_each_row(h, w, |row, i, y, kx, cols| {
                let from = &block[row * n + i * wo..][..wo];
                let into = &mut plane[y * w..][..w];
                for j in cols {
                    into[j * s + kx - p] += from[j];
                }
            });
        }
        Ok((CpuStorage::F32(dst), Shape::from((b, c, h, w))))
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Pcg32::new(seed, 7);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.uniform() - 0.5).collect::<Vec<f32>>(), shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn the_matrix_product_convolution_equals_candles_for_every_kernel_stride_and_padding() {
        // Odd and even sides, so strided outputs end both on and off a phase boundary.
        for (k, stride, padding, side) in
            [(3, 1, 1, 9), (3, 2, 1, 9), (3, 2, 1, 10), (1, 1, 0, 7), (1, 2, 0, 7), (7, 2, 3, 13), (3, 1, 0, 6), (5, 3, 2, 11)]
        {
            let x = seeded(&[2, 3, side, side + 1], k as u64 * 31 + stride as u64);
            let weight = seeded(&[4, 3, k, k], 99);
            let bias = seeded(&[4], 5);
            let ours = conv2d_as_matmul(&x, &weight, Some(&bias), stride, padding).unwrap();
            let theirs = x.conv2d(&weight, padding, stride, 1, 1).unwrap().broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap()).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k {k} stride {stride} padding {padding} side {side}");
            let d = max_diff(&ours, &theirs);
            assert!(d < 1e-5, "k {k} stride {stride} padding {padding} side {side}: differs by {d}");
        }
    }

    #[test]
    fn the_matrix_product_convolution_has_candles_input_gradient() {
        let x = Var::from_tensor(&seeded(&[1, 2, 8, 8], 3)).unwrap();
        let weight = seeded(&[3, 2, 3, 3], 4);
        let ours = conv2d_as_matmul(x.as_tensor(), &weight, None, 2, 1).unwrap().sqr().unwrap().sum_all().unwrap();
        let theirs = x.as_tensor().conv2d(&weight, 1, 2, 1, 1).unwrap().sqr().unwrap().sum_all().unwrap();
        let (g1, g2) = (ours.backward().unwrap(), theirs.backward().unwrap());
        let d = max_diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        assert!(d < 1e-5, "input gradients differ by {d}");
    }
}
