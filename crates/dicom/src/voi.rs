//! VOI windowing: the window from the file or from percentiles, and its DICOM functions.
//!
//! Output is in [0, 1]: the DICOM formulas of PS3.3 C.11.2.1.2 with y_min = 0 and y_max = 1.

/// A VOI LUT function of PS3.3 C.11.2.1.3 (`VOILUTFunction`, default LINEAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// Where a [`Window`] came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowSource {
    /// `WindowCenter`/`WindowWidth` of the file (the first value when multi-valued).
    File,
    /// Percentiles of the default frame's modality values (the file had no usable window).
    Percentile { low: f64, high: f64 },
    /// The first VOI LUT Sequence item of the file (applied by [`VoiLut`]; the window is the
    /// linear window over the LUT's input range, for consumers that only read a window).
    VoiLut,
}

/// A VOI LUT (PS3.3 C.11.2.1.1): modality values `first .. first + data.len()` index `data`,
/// values outside are clamped to the ends; output is `data[i] / (2^bits - 1)`, in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct VoiLut {
    /// The first input value mapped (LUT Descriptor, second value).
    pub first: i32,
    /// The LUT's output bit depth (LUT Descriptor, third value).
    pub bits: u8,
    pub data: Vec<u16>,
}

impl VoiLut {
    /// Maps one modality value to [0, 1].
    pub fn apply(&self, x: f64) -> f64 {
        let last = self.data.len() as f64 - 1.0;
        let i = (x.floor() - f64::from(self.first)).clamp(0.0, last) as usize;
        let max = ((1u32 << self.bits) - 1).max(1);
        (f64::from(self.data[i]) / f64::from(max)).min(1.0)
    }

    /// The linear window over the LUT's input range.
    pub fn window(&self) -> Window {
        let width = (self.data.len() as f64).max(1.0);
        Window { center: f64::from(self.first) + width / 2.0, width, function: VoiFunction::LinearExact, source: WindowSource::VoiLut }
    }
}

/// A window applied to modality values, mapping them to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
    pub source: WindowSource,
}

/// Percentiles (0 to 100) for the window of files without one. Default 0.5 and 99.5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub low: f64,
    pub high: f64,
}

impl Default for Percentiles {
    fn default() -> Self {
        Percentiles { low: 0.5, high: 99.5 }
    }
}

impl Window {
    /// Maps one modality value to [0, 1].
    pub fn apply(&self, x: f64) -> f64 {
        let (c, w) = (self.center, self.width);
        match self.function {
            VoiFunction::Linear => {
                // PS3.3 C.11.2.1.2.1: c - 0.5 and w - 1 (w >= 1; w == 1 is a step).
                let (c, w) = (c - 0.5, w - 1.0);
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            VoiFunction::LinearExact => {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        }
    }

    /// A LINEAR_EXACT window mapping the `low` percentile to 0 and the `high` one to 1
    /// (percentiles interpolated linearly between ranks, as numpy's default). Out-of-range or
    /// NaN percentiles are clamped to [0, 100] (NaN becomes the default); a constant image gets
    /// width 1.
    pub fn from_percentiles(values: &[f32], p: Percentiles) -> Window {
        let clean = |x: f64, default: f64| {
            if x.is_nan() { default } else { x.clamp(0.0, 100.0) }
        };
        let (mut low, mut high) = (clean(p.low, 0.5), clean(p.high, 99.5));
        if low > high {
            std::mem::swap(&mut low, &mut high);
        }
        let (lo, hi) = percentile_pair(values, low, high);
        let width = if hi > lo { hi - lo } else { 1.0 };
        Window { center: (lo + hi) / 2.0, width, function: VoiFunction::LinearExact, source: WindowSource::Percentile { low, high } }
    }
}

/// The `low` and `high` numpy-style linear percentiles of the finite `values` ((0, 1) when none).
///
/// Integer-valued data within a range of 2^20 (CT, MR, CR and DX after an integer rescale: the
/// common case) goes through a counting histogram, two passes; anything else through selection.
fn percentile_pair(values: &[f32], low: f64, high: f64) -> (f64, f64) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    let mut integers = true;
    let mut count = 0usize;
    for &v in values.iter().filter(|v| v.is_finite()) {
        min = min.min(v);
        max = max.max(v);
        // Not `fract()`: that is a libm call (truncf) per value without SSE4.1.
        integers &= (v as i64) as f32 == v;
        count += 1;
    }
    if count == 0 {
        return (0.0, 1.0);
    }
    let rank = |p: f64| {
        let r = p / 100.0 * (count - 1) as f64;
        let k = (r.floor() as usize).min(count - 1);
        (k, r - k as f64)
    };
    let ((k_lo, f_lo), (k_hi, f_hi)) = (rank(low), rank(high));
    let range = f64::from(max) - f64::from(min);
    if integers && range < f64::from(1u32 << 20) {
        let mut counts = vec![0u32; range as usize + 1];
        for &v in values.iter().filter(|v| v.is_finite()) {
            counts[(f64::from(v) - f64::from(min)) as usize] += 1;
        }
        // Values at sorted ranks k_lo, k_lo+1, k_hi, k_hi+1 (clamped), in one cumulative pass.
        let wanted = [k_lo, (k_lo + 1).min(count - 1), k_hi, (k_hi + 1).min(count - 1)];
        let mut found = [f64::from(min); 4];
        let (mut seen, mut next) = (0usize, 0usize);
        for (offset, &c) in counts.iter().enumerate() {
            seen += c as usize;
            while next < 4 && wanted[next] < seen {
                found[next] = f64::from(min) + offset as f64;
                next += 1;
            }
            if next == 4 {
                break;
            }
        }
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        return (lerp(found[0], found[1], f_lo), lerp(found[2], found[3], f_hi));
    }
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (percentile(&mut sorted, low), percentile(&mut sorted, high))
}

/// numpy-style linear percentile, O(n) by selection. `values` non-empty, `p` in [0, 100].
fn percentile(values: &mut [f32], p: f64) -> f64 {
    let rank = p / 100.0 * (values.len() - 1) as f64;
    let k = (rank.floor() as usize).min(values.len() - 1);
    let frac = rank - k as f64;
    let (_, nth, upper) = values.select_nth_unstable_by(k, f32::total_cmp);
    let a = f64::from(*nth);
    let b = upper.iter().copied().min_by(f32::total_cmp).map_or(a, f64::from);
    a + (b - a) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(function: VoiFunction, center: f64, width: f64, x: f64, expected: f64) {
        let w = Window { center, width, function, source: WindowSource::File };
        let got = w.apply(x);
        assert!((got - expected).abs() < 1e-12, "{function:?} c={center} w={width} x={x}: {got} != {expected}");
    }

    #[test]
    fn linear_follows_the_dicom_formula() {
        check(VoiFunction::Linear, 40.0, 400.0, -161.0, 0.0);
        check(VoiFunction::Linear, 40.0, 400.0, 39.5, 0.5);
        check(VoiFunction::Linear, 40.0, 400.0, 239.5, 1.0);
        check(VoiFunction::Linear, 40.0, 400.0, 240.0, 1.0);
        check(VoiFunction::Linear, 40.0, 400.0, 0.0, (0.0 - 39.5) / 399.0 + 0.5);
        check(VoiFunction::Linear, 100.0, 1.0, 99.5, 0.0);
        check(VoiFunction::Linear, 100.0, 1.0, 99.6, 1.0);
    }

    #[test]
    fn linear_exact_and_sigmoid_follow_the_dicom_formulas() {
        check(VoiFunction::LinearExact, 0.0, 10.0, 2.5, 0.75);
        check(VoiFunction::LinearExact, 0.0, 10.0, -5.0, 0.0);
        check(VoiFunction::Sigmoid, 0.0, 10.0, 0.0, 0.5);
        check(VoiFunction::Sigmoid, 0.0, 10.0, 5.0, 1.0 / (1.0 + (-2.0f64).exp()));
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let values: Vec<f32> = (0..=100).rev().map(|v| v as f32).collect();
        let w = Window::from_percentiles(&values, Percentiles { low: 0.5, high: 99.5 });
        // numpy.percentile(range(101), [0.5, 99.5]) == [0.5, 99.5]
        assert_eq!((w.center, w.width), (50.0, 99.0));
        let w = Window::from_percentiles(&[7.0; 9], Percentiles::default());
        assert_eq!((w.center, w.width, w.apply(7.0)), (7.0, 1.0, 0.5));
        // The selection path (non-integers) agrees with numpy too.
        let halves: Vec<f32> = (0..=100).map(|v| v as f32 + 0.5).collect();
        let w = Window::from_percentiles(&halves, Percentiles { low: 10.0, high: 75.0 });
        assert_eq!((w.center, w.width), ((10.5 + 75.5) / 2.0, 65.0));
        // numpy.percentile([0, 10, 10, 30], [25, 90]) == [7.5, 24.0]
        let w = Window::from_percentiles(&[30.0, 10.0, 0.0, 10.0], Percentiles { low: 25.0, high: 90.0 });
        assert!((w.center - 15.75).abs() < 1e-12 && (w.width - 16.5).abs() < 1e-12, "{w:?}");
    }
}
