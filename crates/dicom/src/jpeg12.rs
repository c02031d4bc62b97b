//! JPEG Extended 12-bit (Process 4: sequential DCT, Huffman, 12-bit samples), decoded here.
//!
//! jpeg-decoder (0.3, also dicom-pixeldata's codec) and zune-jpeg stop at 8-bit DCT; the C
//! libraries that do 12 bits (libjpeg-turbo 3's `jpeg12_*`, DCMTK's ijg12, GDCM's) are not
//! packaged for linking here or would need their own bindings. Process 4 is small: ITU-T T.81
//! F.2 (Huffman decoding of sequential DCT) and A.3.3 (IDCT). This decoder takes SOF0/SOF1
//! frames of any precision 8 or 12, one or more scans (interleaved or not), restart intervals,
//! 8- and 16-bit quantisation tables, and components without subsampling (every H = V = 1, as
//! grey images always are). Progressive, lossless (handled by jpeg-decoder), arithmetic coding
//! and subsampled colour are refused with a message.
//!
//! The IDCT is the separable float form of A.3.3; outputs are rounded and clamped to
//! [0, 2^P − 1]. libjpeg's integer IDCT rounds differently: the tests accept the 0.1 %
//! of the range (4 grey levels at 12 bits) against pydicom + pylibjpeg-libjpeg.
//!
//! Every length and index comes from the input, so all are checked: a malformed stream is an
//! `Err(String)`, never a panic, and the work is bounded by the frame size (each block reads at
//! most 64 coefficients; the entropy reader returns zeros past the end and the frame is then
//! refused as truncated).

/// Zigzag index → natural (row-major) index.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56,
    57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A decoded frame: samples per component interleaved, row-major.
pub(crate) struct Frame {
    pub precision: u8,
    pub width: u16,
    pub height: u16,
    pub components: usize,
    pub samples: Vec<u16>,
}

#[derive(Clone, Default)]
struct Huffman {
    /// (code length 1..=16) → (first code, number of codes, index of first value)
    first: [(u32, u32, usize); 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self, String> {
        let mut h = Huffman { first: [(0, 0, 0); 17], values };
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=16 {
            let n = u32::from(counts[len - 1]);
            h.first[len] = (code, n, index);
            code += n;
            index += n as usize;
            if code > (1 << len) {
                return Err("invalid Huffman table".into());
            }
            code <<= 1;
        }
        if index > h.values.len() {
            return Err("Huffman table shorter than its counts".into());
        }
        Ok(h)
    }

    fn decode(&self, bits: &mut Bits) -> Result<u8, String> {
        let mut code = 0u32;
        for len in 1..=16 {
            code = (code << 1) | bits.bit();
            let (first, n, index) = self.first[len];
            if code.wrapping_sub(first) < n {
                return Ok(self.values[index + (code - first) as usize]);
            }
        }
        Err("invalid Huffman code".into())
    }
}

/// Entropy-coded data reader: removes stuffed zero bytes, stops at markers.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    count: u32,
    /// Bits were asked for past the end of the entropy-coded segment.
    overrun: bool,
}

impl Bits<'_> {
    fn bit(&mut self) -> u32 {
        if self.count == 0 {
            let byte = match self.data.get(self.pos) {
                Some(0xFF) if self.data.get(self.pos + 1) == Some(&0x00) => {
                    self.pos += 2;
                    0xFF
                }
                // A marker (or the end): feed zeros.
                Some(0xFF) | None => {
                    self.overrun = true;
                    0
                }
                Some(&b) => {
                    self.pos += 1;
                    b
                }
            };
            self.acc = u32::from(byte);
            self.count = 8;
        }
        self.count -= 1;
        (self.acc >> self.count) & 1
    }

    fn receive_extend(&mut self, size: u8) -> Result<i32, String> {
        if size == 0 {
            return Ok(0);
        }
        if size > 16 {
            return Err("coefficient size over 16 bits".into());
        }
        let mut v = 0i32;
        for _ in 0..size {
            v = (v << 1) | self.bit() as i32;
        }
        Ok(if v < 1 << (size - 1) { v - (1 << size) + 1 } else { v })
    }

    /// Byte-aligns and consumes an RSTn marker, if one is next.
    fn restart(&mut self) -> Result<(), String> {
        self.count = 0;
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(0xD0..=0xD7)) => {
                self.pos += 2;
                self.overrun = false;
                Ok(())
            }
            _ => Err("missing restart marker".into()),
        }
    }
}

struct Component {
    id: u8,
    quant: usize,
    /// Blocks across and down (the component padded to whole blocks).
    blocks_w: usize,
    blocks_h: usize,
    plane: Vec<f32>,
}

/// Float IDCT basis: `basis[x][u] = C(u)/2 · cos((2x+1)uπ/16)`.
fn idct_basis() -> [[f32; 8]; 8] {
    let mut b = [[0f32; 8]; 8];
    for (x, row) in b.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
            *v = (c / 2.0 * (((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI) / 16.0).cos()) as f32;
        }
    }
    b
}

fn be16(d: &[u8], i: usize) -> Result<usize, String> {
    d.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or_else(|| "truncated marker segment".to_string())
}

/// Decodes one sequential-DCT JPEG frame (precision 8 or 12). `max_pixels` bounds the frame
/// before anything is allocated.
pub(crate) fn decode(data: &[u8], max_pixels: usize) -> Result<Frame, String> {
    if data.get(0..2) != Some(&[0xFF, 0xD8]) {
        return Err("not a JPEG stream".into());
    }
    let mut quant = [[0f32; 64]; 4];
    let mut dc: [Huffman; 4] = Default::default();
    let mut ac: [Huffman; 4] = Default::default();
    let mut components: Vec<Component> = Vec::new();
    let (mut precision, mut width, mut height) = (0u8, 0u16, 0u16);
    let mut restart_interval = 0usize;
    let mut scanned = false;
    let basis = idct_basis();
    let mut pos = 2usize;
    loop {
        if data.get(pos) != Some(&0xFF) {
            return Err(format!("expected a marker at {pos}"));
        }
        let marker = *data.get(pos + 1).ok_or("truncated before EOI")?;
        pos += 2;
        match marker {
            0xFF => pos -= 1, // fill byte
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => {}
            _ => {
                let len = be16(data, pos)?;
                let seg = data.get(pos + 2..pos + len).filter(|_| len >= 2).ok_or("marker segment runs past the end")?;
                match marker {
                    0xC0 | 0xC1 => {
                        if !components.is_empty() {
                            return Err("two frame headers".into());
                        }
                        precision = *seg.first().ok_or("short SOF")?;
                        height = be16(seg, 1)? as u16;
                        width = be16(seg, 3)? as u16;
                        let n = usize::from(*seg.get(5).ok_or("short SOF")?);
                        if !matches!(precision, 8 | 12) || height == 0 || width == 0 {
                            return Err(format!("frame {width}x{height} of precision {precision}"));
                        }
                        if !matches!(n, 1 | 3) {
                            return Err(format!("{n} components"));
                        }
                        let pixels = usize::from(width) * usize::from(height);
                        if pixels > max_pixels {
                            return Err(format!("frame {width}x{height} exceeds the header"));
                        }
                        let (blocks_w, blocks_h) = (usize::from(width).div_ceil(8), usize::from(height).div_ceil(8));
                        for c in 0..n {
                            let s = seg.get(6 + 3 * c..9 + 3 * c).ok_or("short SOF")?;
                            if s[1] != 0x11 {
                                return Err("subsampled components".into());
                            }
                            let mut plane = Vec::new();
                            plane.try_reserve_exact(blocks_w * blocks_h * 64).map_err(|_| "allocation failed")?;
                            plane.resize(blocks_w * blocks_h * 64, 0.0);
                            components.push(Component { id: s[0], quant: usize::from(s[2] & 3), blocks_w, blocks_h, plane });
                        }
                    }
                    0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                        return Err(format!("coding process of SOF{} is not sequential Huffman DCT", marker - 0xC0));
                    }
                    0xC4 => {
                        let mut i = 0;
                        while i < seg.len() {
                            let tc_th = seg[i];
                            let counts: [u8; 16] = seg.get(i + 1..i + 17).ok_or("short DHT")?.try_into().map_err(|_| "short DHT")?;
                            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                            let values = seg.get(i + 17..i + 17 + n).ok_or("short DHT")?.to_vec();
                            let table = Huffman::new(&counts, values)?;
                            let id = usize::from(tc_th & 3);
                            match tc_th >> 4 {
                                0 => dc[id] = table,
                                1 => ac[id] = table,
                                _ => return Err("bad DHT class".into()),
                            }
                            i += 17 + n;
                        }
                    }
                    0xDB => {
                        let mut i = 0;
                        while i < seg.len() {
                            let (pq, tq) = (seg[i] >> 4, usize::from(seg[i] & 3));
                            let size = if pq == 0 { 64 } else { 128 };
                            let t = seg.get(i + 1..i + 1 + size).ok_or("short DQT")?;
                            for k in 0..64 {
                                let q = if pq == 0 { u16::from(t[k]) } else { u16::from_be_bytes([t[2 * k], t[2 * k + 1]]) };
                                quant[tq][ZIGZAG[k]] = f32::from(q);
                            }
                            i += 1 + size;
                        }
                    }
                    0xDD => restart_interval = be16(seg, 0)?,
                    0xDA => {
                        let ns = usize::from(*seg.first().ok_or("short SOS")?);
                        let mut scan = Vec::new();
                        for s in 0..ns {
                            let b = seg.get(1 + 2 * s..3 + 2 * s).ok_or("short SOS")?;
                            let c = components.iter().position(|c| c.id == b[0]).ok_or("scan names an unknown component")?;
                            scan.push((c, usize::from(b[1] >> 4 & 3), usize::from(b[1] & 3)));
                        }
                        if scan.is_empty() {
                            return Err("empty scan".into());
                        }
                        let (entropy_start, end) = (pos + len, entropy_end(data, pos + len));
                        let mut bits = Bits { data: &data[entropy_start..end], pos: 0, acc: 0, count: 0, overrun: false };
                        decode_scan(&mut bits, &mut components, &scan, &quant, &dc, &ac, restart_interval, &basis)?;
                        if bits.overrun {
                            return Err("entropy-coded data ends early (truncated)".into());
                        }
                        scanned = true;
                        pos = end;
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
    let (w, h, n) = (usize::from(width), usize::from(height), components.len());
    let max = f32::from((1u16 << precision) - 1);
    let shift = f32::from(1u16 << (precision - 1));
    let mut samples = Vec::new();
    samples.try_reserve_exact(w * h * n).map_err(|_| "allocation failed")?;
    for y in 0..h {
        for x in 0..w {
            for c in &components {
                let block = (y / 8) * c.blocks_w + x / 8;
                let v = c.plane[block * 64 + (y % 8) * 8 + x % 8] + shift;
                samples.push(v.round().clamp(0.0, max) as u16);
            }
        }
    }
    Ok(Frame { precision, width, height, components: n, samples })
}

/// Where the entropy-coded segment starting at `start` ends: the first marker other than RSTn.
fn entropy_end(data: &[u8], start: usize) -> usize {
    let mut i = start;
    while i + 1 < data.len() {
        if data[i] == 0xFF && !matches!(data[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF) {
            return i;
        }
        i += 1;
    }
    data.len()
}

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    bits: &mut Bits,
    components: &mut [Component],
    scan: &[(usize, usize, usize)],
    quant: &[[f32; 64]; 4],
    dc: &[Huffman; 4],
    ac: &[Huffman; 4],
    restart_interval: usize,
    basis: &[[f32; 8]; 8],
) -> Result<(), String> {
    // No subsampling: an MCU is one block of each scan component; a single-component scan
    // walks that component's blocks.
    let (blocks_w, blocks_h) = (components[scan[0].0].blocks_w, components[scan[0].0].blocks_h);
    let mut pred = vec![0i32; scan.len()];
    let mut coef = [0f32; 64];
    for mcu in 0..blocks_w * blocks_h {
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            bits.restart()?;
            pred.iter_mut().for_each(|p| *p = 0);
        }
        for (s, &(c, td, ta)) in scan.iter().enumerate() {
            coef.fill(0.0);
            let q = &quant[components[c].quant];
            let t = dc[td].decode(bits)?;
            pred[s] = pred[s].wrapping_add(bits.receive_extend(t)?);
            coef[0] = pred[s] as f32 * q[0];
            let mut k = 1;
            while k < 64 {
                let rs = ac[ta].decode(bits)?;
                let (r, size) = (usize::from(rs >> 4), rs & 15);
                if size == 0 {
                    if r == 15 {
                        k += 16;
                        continue;
                    }
                    break;
                }
                k += r;
                if k > 63 {
                    return Err("coefficient index past 63".into());
                }
                coef[ZIGZAG[k]] = bits.receive_extend(size)? as f32 * q[ZIGZAG[k]];
                k += 1;
            }
            let block = &mut components[c].plane[mcu * 64..mcu * 64 + 64];
            idct(&coef, block, basis);
        }
    }
    Ok(())
}

/// `out[y][x] = Σ_v Σ_u basis[y][v] · basis[x][u] · coef[v][u]` (T.81 A.3.3), separably.
fn idct(coef: &[f32; 64], out: &mut [f32], basis: &[[f32; 8]; 8]) {
    let mut tmp = [0f32; 64];
    // Rows: tmp[v][x] = Σ_u basis[x][u] · coef[v][u]
    for v in 0..8 {
        let row = &coef[v * 8..v * 8 + 8];
        if row.iter().all(|&c| c == 0.0) {
            continue;
        }
        for x in 0..8 {
            tmp[v * 8 + x] = (0..8).map(|u| basis[x][u] * row[u]).sum();
        }
    }
    for x in 0..8 {
        for y in 0..8 {
            out[y * 8 + x] = (0..8).map(|v| basis[y][v] * tmp[v * 8 + x]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idct_of_a_dc_only_block_is_flat() {
        let mut coef = [0f32; 64];
        coef[0] = 80.0;
        let mut out = [0f32; 64];
        idct(&coef, &mut out, &idct_basis());
        assert!(out.iter().all(|v| (v - 10.0).abs() < 1e-4), "{out:?}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &b""[..],
            &[0xFF, 0xD8][..],
            &[0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x02][..],
            &[0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x0B, 12, 0, 8, 0, 8, 1, 1, 0x11, 0][..],
        ] {
            assert!(decode(data, 1 << 20).is_err());
        }
    }
}
