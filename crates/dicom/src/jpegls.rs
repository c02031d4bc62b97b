//! JPEG-LS (ITU-T T.87 / ISO 14495-1) lossless and near-lossless decoding, done here.
//!
//! The maintained decoder is CharLS (C++): the `charls` crate builds it with cmake or links a
//! system libcharls, which would make every build of the service need a C++ library or cmake.
//! The decoding process is small enough to carry: context modelling with the default or LSE
//! thresholds (C.2.4.1.1), regular mode (A.4–A.6), run mode and run interruption (A.7), limited
//! Golomb codes, the JPEG-LS bit stuffing (a 0 bit after every 0xFF), NEAR > 0, and the
//! no-interleave, line-interleave and sample-interleave modes, 2 to 16 bits. Mapping tables,
//! point transforms and subsampled components are refused with a message.
//!
//! All input is untrusted: reads past the end feed zeros and mark the scan as truncated (an
//! error), every length and index is checked, the work is bounded by the frame size.

const J: [u32; 32] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// A decoded frame: samples per component interleaved, row-major.
pub(crate) struct Frame {
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    pub components: usize,
    pub samples: Vec<u16>,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    count: u32,
    /// Zero bits fed past the end of the scan data (the lowest `fake` bits of `acc` onward).
    fake: u32,
}

impl Bits<'_> {
    /// Bits past the end of the scan data were consumed.
    fn truncated(&self) -> bool {
        self.count < self.fake
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let Some(&b) = self.data.get(self.pos) else {
                // Past the end: zeros, and remember it.
                self.fake = self.fake.saturating_add(8);
                self.acc <<= 8;
                self.count += 8;
                continue;
            };
            let previous_ff = self.pos > 0 && self.data[self.pos - 1] == 0xFF;
            if previous_ff {
                if b & 0x80 != 0 {
                    // A marker: the scan ends here.
                    self.fake = self.fake.saturating_add(8);
                    self.acc <<= 8;
                    self.count += 8;
                    continue;
                }
                self.acc = (self.acc << 7) | u64::from(b);
                self.count += 7;
            } else {
                self.acc = (self.acc << 8) | u64::from(b);
                self.count += 8;
            }
            self.pos += 1;
        }
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < n {
            self.fill();
        }
        self.count -= n;
        ((self.acc >> self.count) & ((1u64 << n) - 1)) as u32
    }

    fn bit(&mut self) -> bool {
        self.bits(1) == 1
    }

    /// Zero bits before the next 1 (at most `cap`, then stops).
    fn unary(&mut self, cap: u32) -> u32 {
        let mut n = 0;
        while n < cap && !self.bit() {
            n += 1;
        }
        n
    }
}

#[derive(Clone, Copy)]
struct Params {
    maxval: i32,
    near: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
    range: i32,
    qbpp: u32,
    limit: u32,
}

impl Params {
    fn new(precision: u8, near: i32, preset: Option<[i32; 5]>) -> Result<Self, String> {
        let default_max = (1i32 << precision) - 1;
        let [mut maxval, mut t1, mut t2, mut t3, mut reset] = preset.unwrap_or([0; 5]);
        if maxval == 0 {
            maxval = default_max;
        }
        if reset == 0 {
            reset = 64;
        }
        if near < 0 || near > maxval.min(255) / 2 {
            return Err(format!("NEAR {near}"));
        }
        let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
        let (d1, d2, d3) = if maxval >= 128 {
            let factor = (maxval.min(4095) + 128) / 256;
            // FACTOR * (BASIC_T1 - 2) + 2 + 3 * NEAR, with BASIC_T1 = 3.
            let a = clamp(factor + 2 + 3 * near, near + 1);
            let b = clamp(factor * (7 - 3) + 3 + 5 * near, a);
            (a, b, clamp(factor * (21 - 4) + 4 + 7 * near, b))
        } else {
            let factor = 256 / (maxval + 1);
            let a = clamp((3 / factor + 3 * near).max(2), near + 1);
            let b = clamp((7 / factor + 5 * near).max(3), a);
            (a, b, clamp((21 / factor + 7 * near).max(4), b))
        };
        if t1 == 0 {
            t1 = d1;
        }
        if t2 == 0 {
            t2 = d2;
        }
        if t3 == 0 {
            t3 = d3;
        }
        if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval.max(t3)) || maxval < 1 {
            return Err("invalid JPEG-LS thresholds".into());
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let qbpp = 32 - ((range - 1) as u32).leading_zeros();
        let bpp = (32 - (maxval as u32).leading_zeros()).max(2);
        Ok(Params { maxval, near, t1, t2, t3, reset, range, qbpp, limit: 2 * (bpp + bpp.max(8)) })
    }
}

#[derive(Clone, Copy)]
struct Context {
    a: i32,
    b: i32,
    c: i32,
    n: i32,
}

#[derive(Clone, Copy)]
struct RunContext {
    a: i32,
    n: i32,
    nn: i32,
    ritype: i32,
}

struct Coder<'a, 'b> {
    p: Params,
    bits: &'a mut Bits<'b>,
    ctx: Vec<Context>,
    run: [RunContext; 2],
}

impl Coder<'_, '_> {
    fn quantize(&self, d: i32) -> i32 {
        let p = &self.p;
        if d <= -p.t3 {
            -4
        } else if d <= -p.t2 {
            -3
        } else if d <= -p.t1 {
            -2
        } else if d < -p.near {
            -1
        } else if d <= p.near {
            0
        } else if d < p.t1 {
            1
        } else if d < p.t2 {
            2
        } else if d < p.t3 {
            3
        } else {
            4
        }
    }

    fn golomb(&mut self, k: u32, limit: u32) -> Result<i32, String> {
        let qbpp = self.p.qbpp;
        let cap = limit.saturating_sub(qbpp + 1);
        let high = self.bits.unary(cap);
        if high >= cap {
            // The escape: a 1 must follow the cap's zeros.
            if !self.bits.bit() {
                return Err("invalid Golomb code".into());
            }
            return Ok(self.bits.bits(qbpp) as i32 + 1);
        }
        if k > 24 {
            return Err("Golomb parameter too large".into());
        }
        Ok(((high as i32) << k) + self.bits.bits(k) as i32)
    }

    fn fix(&self, x: i32) -> i32 {
        let p = &self.p;
        let mut x = x;
        if x < -p.near {
            x += p.range * (2 * p.near + 1);
        } else if x > p.maxval + p.near {
            x -= p.range * (2 * p.near + 1);
        }
        x.clamp(0, p.maxval)
    }

    fn regular(&mut self, ra: i32, rb: i32, rc: i32, rd: i32) -> Result<i32, String> {
        let q1 = self.quantize(rd - rb);
        let q2 = self.quantize(rb - rc);
        let q3 = self.quantize(rc - ra);
        let mut q = (q1 * 9 + q2) * 9 + q3;
        let sign = if q < 0 { -1 } else { 1 };
        q *= sign;
        let q = q as usize;
        let Context { a, b, c, n } = self.ctx[q];
        let predicted = if rc >= ra.max(rb) {
            ra.min(rb)
        } else if rc <= ra.min(rb) {
            ra.max(rb)
        } else {
            ra + rb - rc
        };
        let px = (predicted + sign * c).clamp(0, self.p.maxval);
        let mut k = 0;
        while (n << k) < a {
            k += 1;
            if k > 24 {
                return Err("corrupt context".into());
            }
        }
        let m = self.golomb(k, self.p.limit)?;
        let mut e = if m & 1 == 1 { -((m + 1) >> 1) } else { m >> 1 };
        if self.p.near == 0 && k == 0 && 2 * b <= -n {
            e = -e - 1;
        }
        self.update(q, e);
        Ok(self.fix(px + sign * e * (2 * self.p.near + 1)))
    }

    fn update(&mut self, q: usize, e: i32) {
        let p = self.p;
        let ctx = &mut self.ctx[q];
        ctx.a += e.abs();
        ctx.b += e * (2 * p.near + 1);
        if ctx.n == p.reset {
            ctx.a >>= 1;
            ctx.b >>= 1;
            ctx.n >>= 1;
        }
        ctx.n += 1;
        if ctx.b + ctx.n <= 0 {
            ctx.b += ctx.n;
            if ctx.b <= -ctx.n {
                ctx.b = -ctx.n + 1;
            }
            if ctx.c > -128 {
                ctx.c -= 1;
            }
        } else if ctx.b > 0 {
            ctx.b -= ctx.n;
            if ctx.b > 0 {
                ctx.b = 0;
            }
            if ctx.c < 127 {
                ctx.c += 1;
            }
        }
    }

    /// ILV 2: every component of an interrupting pixel uses the first run context and Rb.
    fn run_interruption_component(&mut self, ra: i32, rb: i32, run_index: usize) -> Result<i32, String> {
        self.run_interruption_with(ra, rb, run_index, 0)
    }

    fn run_interruption(&mut self, ra: i32, rb: i32, run_index: usize) -> Result<i32, String> {
        let ritype = usize::from((ra - rb).abs() <= self.p.near);
        self.run_interruption_with(ra, rb, run_index, ritype)
    }

    fn run_interruption_with(&mut self, ra: i32, rb: i32, run_index: usize, ritype: usize) -> Result<i32, String> {
        let rc = self.run[ritype];
        let temp = rc.a + (rc.n >> 1) * rc.ritype;
        let mut k = 0;
        let mut ntest = rc.n;
        while ntest < temp {
            ntest <<= 1;
            k += 1;
            if k > 24 {
                return Err("corrupt run context".into());
            }
        }
        let em = self.golomb(k, self.p.limit - J[run_index] - 1)?;
        let t = em + rc.ritype;
        let map = t & 1;
        let abs = (t + map) / 2;
        let e = if (k != 0 || 2 * rc.nn >= rc.n) == (map == 1) { -abs } else { abs };
        let ctx = &mut self.run[ritype];
        if e < 0 {
            ctx.nn += 1;
        }
        ctx.a += (em + 1 - ctx.ritype) >> 1;
        if ctx.n == self.p.reset {
            ctx.a >>= 1;
            ctx.n >>= 1;
            ctx.nn >>= 1;
        }
        ctx.n += 1;
        let step = 2 * self.p.near + 1;
        Ok(if ritype == 1 {
            self.fix(ra + e * step)
        } else {
            let sign = if rb - ra < 0 { -1 } else { 1 };
            self.fix(rb + e * sign * step)
        })
    }

    /// Decodes one line into `cur[1..=w]` given `prev` (both w + 2 long, edges prepared).
    fn line(&mut self, prev: &[i32], cur: &mut [i32], run_index: &mut usize) -> Result<(), String> {
        let w = cur.len() - 2;
        let near = self.p.near;
        let mut x = 1;
        while x <= w {
            let (ra, rb, rc, rd) = (cur[x - 1], prev[x], prev[x - 1], prev[x + 1]);
            if (rd - rb).abs() <= near && (rb - rc).abs() <= near && (rc - ra).abs() <= near {
                // Run mode.
                let (count, ended) = self.run_length(w + 1 - x, run_index)?;
                for v in &mut cur[x..x + count] {
                    *v = ra;
                }
                x += count;
                if x > w {
                    break;
                }
                if !ended {
                    let rb = prev[x];
                    cur[x] = self.run_interruption(ra, rb, *run_index)?;
                    *run_index = run_index.saturating_sub(1);
                    x += 1;
                }
            } else {
                cur[x] = self.regular(ra, rb, rc, rd)?;
                x += 1;
            }
        }
        Ok(())
    }
}

impl Coder<'_, '_> {
    /// Reads a run's length in run mode (T.87 A.7.1): whole `2^J` blocks while the bits say so,
    /// then the remainder; `ended` when the run reaches the end of the line (no interruption
    /// follows). `remaining` is what is left of the line; a longer run is an error.
    fn run_length(&mut self, remaining: usize, run_index: &mut usize) -> Result<(usize, bool), String> {
        let mut count = 0usize;
        while self.bits.bit() {
            let step = (1usize << J[*run_index]).min(remaining - count);
            count += step;
            if step == 1 << J[*run_index] {
                *run_index = (*run_index + 1).min(31);
            }
            if count == remaining {
                return Ok((count, true));
            }
            if self.bits.truncated() {
                return Err("truncated run".into());
            }
        }
        count += self.bits.bits(J[*run_index]) as usize;
        if count > remaining {
            return Err("run past the end of the line".into());
        }
        Ok((count, false))
    }

    /// Sample-interleaved (ILV 2) line of three components: `cur`/`prev` hold (w + 2) pixels of
    /// three values. Run mode needs all three flat; an interrupted run codes each component
    /// against Rb with the first run context (as CharLS does, T.87 A.7.2 for ILV 2).
    fn line3(&mut self, prev: &[i32], cur: &mut [i32], run_index: &mut usize) -> Result<(), String> {
        let w = cur.len() / 3 - 2;
        let mut x = 1;
        while x <= w {
            let at = |line: &[i32], i: usize, c: usize| line[3 * i + c];
            let mut q = [0i32; 3];
            for (c, qc) in q.iter_mut().enumerate() {
                let (ra, rb, rc, rd) = (at(cur, x - 1, c), at(prev, x, c), at(prev, x - 1, c), at(prev, x + 1, c));
                *qc = (self.quantize(rd - rb) * 9 + self.quantize(rb - rc)) * 9 + self.quantize(rc - ra);
            }
            if q == [0, 0, 0] {
                let (count, ended) = self.run_length(w + 1 - x, run_index)?;
                for i in x..x + count {
                    for c in 0..3 {
                        cur[3 * i + c] = cur[3 * (x - 1) + c];
                    }
                }
                x += count;
                if x > w {
                    break;
                }
                if !ended {
                    for c in 0..3 {
                        let (ra, rb) = (cur[3 * (x - 1) + c], prev[3 * x + c]);
                        cur[3 * x + c] = self.run_interruption_component(ra, rb, *run_index)?;
                    }
                    *run_index = run_index.saturating_sub(1);
                    x += 1;
                }
            } else {
                for c in 0..3 {
                    let (ra, rb, rc, rd) = (cur[3 * (x - 1) + c], prev[3 * x + c], prev[3 * (x - 1) + c], prev[3 * (x + 1) + c]);
                    cur[3 * x + c] = self.regular(ra, rb, rc, rd)?;
                }
                x += 1;
            }
        }
        Ok(())
    }
}

fn be16(d: &[u8], i: usize) -> Result<usize, String> {
    d.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or_else(|| "truncated marker segment".to_string())
}

/// Decodes one JPEG-LS frame. `max_pixels` bounds the frame before anything is allocated.
pub(crate) fn decode(data: &[u8], max_pixels: usize) -> Result<Frame, String> {
    if data.get(0..2) != Some(&[0xFF, 0xD8]) {
        return Err("not a JPEG-LS stream".into());
    }
    let (mut precision, mut width, mut height) = (0u8, 0usize, 0usize);
    let mut ids: Vec<u8> = Vec::new();
    let mut planes: Vec<Vec<u16>> = Vec::new();
    let mut preset: Option<[i32; 5]> = None;
    let mut scanned = false;
    let mut pos = 2usize;
    loop {
        if data.get(pos) != Some(&0xFF) {
            return Err(format!("expected a marker at {pos}"));
        }
        let marker = *data.get(pos + 1).ok_or("truncated before EOI")?;
        pos += 2;
        match marker {
            0xFF => pos -= 1,
            0xD9 => break,
            _ => {
                let len = be16(data, pos)?;
                let seg = data.get(pos + 2..pos + len).filter(|_| len >= 2).ok_or("marker segment runs past the end")?;
                match marker {
                    0xF7 => {
                        precision = *seg.first().ok_or("short SOF55")?;
                        height = be16(seg, 1)?;
                        width = be16(seg, 3)?;
                        let n = usize::from(*seg.get(5).ok_or("short SOF55")?);
                        if !(2..=16).contains(&precision) || width == 0 || height == 0 {
                            return Err(format!("frame {width}x{height}, precision {precision}"));
                        }
                        if !matches!(n, 1 | 3) || !planes.is_empty() {
                            return Err(format!("{n} components"));
                        }
                        if width * height > max_pixels {
                            return Err(format!("frame {width}x{height} exceeds the header"));
                        }
                        for c in 0..n {
                            let s = seg.get(6 + 3 * c..9 + 3 * c).ok_or("short SOF55")?;
                            if s[1] != 0x11 {
                                return Err("unsupported: subsampled JPEG-LS components".into());
                            }
                            ids.push(s[0]);
                            let mut plane = Vec::new();
                            plane.try_reserve_exact(width * height).map_err(|_| "allocation failed")?;
                            plane.resize(width * height, 0u16);
                            planes.push(plane);
                        }
                    }
                    0xF8 => {
                        if seg.first() == Some(&1) {
                            let v = |i| be16(seg, i).map(|v| v as i32);
                            preset = Some([v(1)?, v(3)?, v(5)?, v(7)?, v(9)?]);
                        } else {
                            return Err("unsupported: JPEG-LS mapping tables or extensions".into());
                        }
                    }
                    0xDA => {
                        if planes.is_empty() {
                            return Err("scan before the frame header".into());
                        }
                        let ns = usize::from(*seg.first().ok_or("short SOS")?);
                        let mut comps = Vec::new();
                        for s in 0..ns {
                            let b = seg.get(1 + 2 * s..3 + 2 * s).ok_or("short SOS")?;
                            if b[1] != 0 {
                                return Err("unsupported: JPEG-LS mapping table".into());
                            }
                            comps.push(ids.iter().position(|&id| id == b[0]).ok_or("scan names an unknown component")?);
                        }
                        let near = i32::from(*seg.get(1 + 2 * ns).ok_or("short SOS")?);
                        let ilv = *seg.get(2 + 2 * ns).ok_or("short SOS")?;
                        let pt = *seg.get(3 + 2 * ns).ok_or("short SOS")?;
                        if pt & 0x0F != 0 {
                            return Err("unsupported: JPEG-LS point transform".into());
                        }
                        if comps.is_empty() || (ns > 1) != (ilv != 0) || ilv > 2 || (ilv == 2 && ns != 3) {
                            return Err(format!("unsupported: JPEG-LS interleave mode {ilv} with {ns} components"));
                        }
                        let params = Params::new(precision, near, preset)?;
                        let start = pos + len;
                        let mut bits = Bits { data: &data[start..], pos: 0, acc: 0, count: 0, fake: 0 };
                        decode_scan(&mut bits, params, &comps, ilv, &mut planes, width, height)?;
                        if bits.truncated() {
                            return Err("scan data ends early (truncated)".into());
                        }
                        // Skip to the next marker (0xFF followed by a byte with the MSB set).
                        let mut i = start + bits.pos.saturating_sub(1);
                        while i + 1 < data.len() && !(data[i] == 0xFF && data[i + 1] >= 0x80) {
                            i += 1;
                        }
                        if i + 1 >= data.len() {
                            return Err("no marker after the scan".into());
                        }
                        scanned = true;
                        pos = i;
                        continue;
                    }
                    _ => {}
                }
                pos += len;
            }
        }
    }
    if !scanned {
        return Err("no scan".into());
    }
    let n = planes.len();
    let mut samples = Vec::new();
    samples.try_reserve_exact(width * height * n).map_err(|_| "allocation failed")?;
    if n == 1 {
        samples.extend_from_slice(&planes[0]);
    } else {
        for i in 0..width * height {
            samples.extend(planes.iter().map(|p| p[i]));
        }
    }
    Ok(Frame { precision, width: width as u32, height: height as u32, components: n, samples })
}

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    bits: &mut Bits,
    params: Params,
    comps: &[usize],
    ilv: u8,
    planes: &mut [Vec<u16>],
    width: usize,
    height: usize,
) -> Result<(), String> {
    let a0 = ((params.range + 32) / 64).max(2);
    let mut coder = Coder {
        p: params,
        bits,
        ctx: vec![Context { a: a0, b: 0, c: 0, n: 1 }; 365],
        run: [RunContext { a: a0, n: 1, nn: 0, ritype: 0 }, RunContext { a: a0, n: 1, nn: 0, ritype: 1 }],
    };
    if ilv == 2 {
        let (mut prev, mut cur, mut run_index) = (vec![0i32; 3 * (width + 2)], vec![0i32; 3 * (width + 2)], 0usize);
        for y in 0..height {
            for c in 0..3 {
                prev[3 * (width + 1) + c] = prev[3 * width + c];
                cur[c] = prev[3 + c];
            }
            coder.line3(&prev, &mut cur, &mut run_index)?;
            for (s, &c) in comps.iter().enumerate() {
                let row = &mut planes[c][y * width..(y + 1) * width];
                for (x, o) in row.iter_mut().enumerate() {
                    *o = cur[3 * (x + 1) + s] as u16;
                }
            }
            std::mem::swap(&mut prev, &mut cur);
            if coder.bits.truncated() {
                return Err("scan data ends early (truncated)".into());
            }
        }
        return Ok(());
    }
    // Per component: previous and current line (w + 2, with edges), run index.
    let mut lines: Vec<(Vec<i32>, Vec<i32>, usize)> =
        comps.iter().map(|_| (vec![0i32; width + 2], vec![0i32; width + 2], 0usize)).collect();
    for y in 0..height {
        for (s, &c) in comps.iter().enumerate() {
            let (prev, cur, run_index) = &mut lines[s];
            prev[width + 1] = prev[width];
            cur[0] = prev[1];
            coder.line(prev, cur, run_index)?;
            let row = &mut planes[c][y * width..(y + 1) * width];
            for (o, &v) in row.iter_mut().zip(&cur[1..=width]) {
                *o = v as u16;
            }
            std::mem::swap(prev, cur);
        }
        if coder.bits.truncated() {
            return Err("scan data ends early (truncated)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_thresholds_follow_t87_for_8_and_16_bits() {
        let p = Params::new(8, 0, None).unwrap();
        assert_eq!((p.t1, p.t2, p.t3, p.range, p.qbpp, p.limit), (3, 7, 21, 256, 8, 32));
        let p = Params::new(16, 0, None).unwrap();
        assert_eq!((p.t1, p.t2, p.t3), (18, 67, 276));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            &[0xFF, 0xD8][..],
            &[0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 8, 0, 8, 0, 8, 1, 1, 0x11, 0][..],
            &[0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 8, 0, 8, 0, 8, 1, 1, 0x11, 0, 0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0][..],
        ] {
            assert!(decode(data, 1 << 20).is_err());
        }
    }
}
