//! Synthetic phantom radiographs as DICOM Part 10 files: the shipped model's kind of input,
//! written as a digital X-ray (DX, chest) so that demos and tests go through exactly the path a
//! real study takes (PACS → WADO-RS → decode → model). The writer is deliberately small:
//! explicit VR little endian, 16-bit MONOCHROME2 with 12 bits stored, a rescale and a window.

/// A clear nodule case for demos and tests: among 100 phantoms from a seed the shipped model
/// never trained on, the nodule-only one with the largest nodule.
pub fn clear_nodule_phantom(size: usize) -> radsight_vision::phantom::Phantom {
    let config = radsight_vision::phantom::PhantomConfig { size, ..Default::default() };
    (0..100)
        .map(|i| radsight_vision::phantom::generate(&config, 424_242, i))
        .filter(|p| p.labels == [true, false])
        .max_by_key(|p| p.masks[0].iter().filter(|m| **m).count())
        .expect("seed 424242 has nodule-only phantoms among its first 100")
}

/// What goes into one phantom file besides its pixels.
pub struct PhantomInstance<'a> {
    pub patient_id: &'a str,
    pub study_uid: &'a str,
    pub series_uid: &'a str,
    pub sop_uid: &'a str,
    pub accession: &'a str,
}

const DX_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Appends one explicit-VR little-endian element, padded to even length as PS3.5 asks.
pub fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &str, value: &[u8]) {
    let mut value = value.to_vec();
    if value.len() % 2 == 1 {
        value.push(if vr == "UI" || vr == "OB" { 0 } else { b' ' });
    }
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr.as_bytes());
    if matches!(vr, "OB" | "OW" | "UN" | "SQ" | "UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&value);
}

/// A DX Part 10 file of a `width`×`height` image with values in [0, 1], stored as 12-bit
/// values 0..=4095 (rescale slope 1, intercept −1024, so modality values are −1024..=3071) with a
/// window covering the full range, and an Imager Pixel Spacing that spans 430 mm over the long
/// side. Elements are written in ascending tag order, as Part 10 asks.
pub fn phantom_part10(meta: &PhantomInstance, width: u16, height: u16, pixels: &[f32]) -> Vec<u8> {
    assert_eq!(pixels.len(), width as usize * height as usize, "pixels must be width × height");
    let mut fmi = Vec::new();
    element(&mut fmi, 0x0002, 0x0001, "OB", &[0, 1]);
    element(&mut fmi, 0x0002, 0x0002, "UI", DX_FOR_PRESENTATION.as_bytes());
    element(&mut fmi, 0x0002, 0x0003, "UI", meta.sop_uid.as_bytes());
    element(&mut fmi, 0x0002, 0x0010, "UI", EXPLICIT_LE.as_bytes());
    element(&mut fmi, 0x0002, 0x0012, "UI", b"1.2.826.0.1.3680043.10.1");
    element(&mut fmi, 0x0002, 0x0013, "SH", b"RADSIGHT");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(&mut out, 0x0002, 0x0000, "UL", &(fmi.len() as u32).to_le_bytes());
    out.extend_from_slice(&fmi);
    element(&mut out, 0x0008, 0x0008, "CS", b"DERIVED\\PRIMARY");
    element(&mut out, 0x0008, 0x0016, "UI", DX_FOR_PRESENTATION.as_bytes());
    element(&mut out, 0x0008, 0x0018, "UI", meta.sop_uid.as_bytes());
    element(&mut out, 0x0008, 0x0050, "SH", meta.accession.as_bytes());
    element(&mut out, 0x0008, 0x0060, "CS", b"DX");
    element(&mut out, 0x0008, 0x0068, "CS", b"FOR PRESENTATION");
    element(&mut out, 0x0008, 0x103E, "LO", b"PA synthetic phantom");
    element(&mut out, 0x0010, 0x0020, "LO", meta.patient_id.as_bytes());
    element(&mut out, 0x0018, 0x0015, "CS", b"CHEST");
    // A 43 cm detector's field of view over the long side, as a DX detector states it.
    let spacing = format!("{:.6}", 430.0 / f64::from(width.max(height)));
    element(&mut out, 0x0018, 0x1164, "DS", format!("{spacing}\\{spacing}").as_bytes());
    element(&mut out, 0x0020, 0x000D, "UI", meta.study_uid.as_bytes());
    element(&mut out, 0x0020, 0x000E, "UI", meta.series_uid.as_bytes());
    element(&mut out, 0x0020, 0x0011, "IS", b"1");
    element(&mut out, 0x0020, 0x0013, "IS", b"1");
    element(&mut out, 0x0028, 0x0002, "US", &1u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0004, "CS", b"MONOCHROME2");
    element(&mut out, 0x0028, 0x0010, "US", &height.to_le_bytes());
    element(&mut out, 0x0028, 0x0011, "US", &width.to_le_bytes());
    element(&mut out, 0x0028, 0x0100, "US", &16u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0101, "US", &12u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0102, "US", &11u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0103, "US", &0u16.to_le_bytes());
    element(&mut out, 0x0028, 0x1050, "DS", b"1023.5");
    element(&mut out, 0x0028, 0x1051, "DS", b"4096");
    element(&mut out, 0x0028, 0x1052, "DS", b"-1024");
    element(&mut out, 0x0028, 0x1053, "DS", b"1");
    element(&mut out, 0x0028, 0x1054, "LO", b"US");
    let data: Vec<u8> = pixels.iter().flat_map(|v| ((v.clamp(0.0, 1.0) * 4095.0).round() as u16).to_le_bytes()).collect();
    element(&mut out, 0x7FE0, 0x0010, "OW", &data);
    out
}
