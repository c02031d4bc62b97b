//! radsight-dicom against pydicom, on pydicom's own test files, and on hand-built objects.
//!
//! The reference fixture is made at test time by `tests/python/dicom_fixture.py` run with
//! `RADSIGHT_TEST_PYTHON` (scripts/test.sh sets it to the test venv). A missing Python, pydicom
//! or test file FAILS these tests; nothing is skipped.
//!
//! Run: `RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python cargo test -p radsight-dicom`

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use radsight_dicom::{
    DecodeError, DecodeLimits, DecodeOptions, GrayImage, Percentiles, PixelBox, VoiFunction, WindowSource, decode, decode_with, letterbox,
};

// ---------------------------------------------------------------------------------------------
// Fixture

fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = std::env::var("RADSIGHT_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "RADSIGHT_TEST_PYTHON is not set: the DICOM tests need the Python test venv with pydicom \
                 (scripts/test.sh sets it up; or `python3 -m venv .venv-test && .venv-test/bin/pip install -r \
                 tests/python/requirements.txt` and export RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python)"
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/dicom_fixture.py");
        // A fresh directory per test process under the target dir (removed by `cargo clean`).
        let dir = tempfile::Builder::new().prefix("dicom-fixture-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap().keep();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("could not run {python} {}: {e}", script.display()));
        assert!(out.status.success(), "the DICOM fixture script failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn fixture_file(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    fixture_file(name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&fixture_file("manifest.json")).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Tolerance against pydicom's modality values (luma for colour). Lossless data matches exactly
/// (f32 rounding aside). 8-bit JPEG is within 1 grey level: jpeg-decoder and Pillow's
/// libjpeg-turbo use different IDCTs and chroma upsampling (max difference measured: 1).
fn modality_tolerance(transfer_syntax: &str) -> f32 {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => 1.0,
        _ => 1e-3,
    }
}

// ---------------------------------------------------------------------------------------------
// pydicom's test files

#[test]
fn every_fixture_file_decodes_like_pydicom_or_fails_with_its_expected_code() {
    let manifest = manifest();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for entry in manifest["files"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let expect = entry["expect"].as_str().unwrap();
        let result = decode(&fixture_file(name), &DecodeLimits::default());
        match (expect, result) {
            ("ok", Ok(img)) => {
                let (rows, cols, frames) =
                    (entry["rows"].as_u64().unwrap(), entry["columns"].as_u64().unwrap(), entry["frames"].as_u64().unwrap());
                if (u64::from(img.rows), u64::from(img.columns), u64::from(img.frames)) != (rows, cols, frames) {
                    failures.push(format!("{name}: shape {}x{}x{} != {frames}x{rows}x{cols}", img.frames, img.rows, img.columns));
                    continue;
                }
                let expected = read_f32(entry["modality"].as_str().unwrap());
                let ts = entry["transfer_syntax"].as_str().unwrap();
                let diff = max_abs_diff(&img.modality_values, &expected);
                let tolerance = entry["tolerance"].as_f64().map_or_else(|| modality_tolerance(ts), |t| t as f32);
                report.push(format!("{name}: max |modality diff| {diff}"));
                if img.modality_values.len() != expected.len() || diff > tolerance {
                    failures.push(format!("{name}: modality values differ from pydicom by {diff} (tolerance {tolerance})"));
                }
                if img.transfer_syntax != ts {
                    failures.push(format!("{name}: transfer syntax {} != {ts}", img.transfer_syntax));
                }
                if let Some(p) = entry["percentiles"].as_array() {
                    let (lo, hi) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                    let w = img.window;
                    let (got_lo, got_hi) = (w.center - w.width / 2.0, w.center + w.width / 2.0);
                    let expected_width = if hi > lo { hi - lo } else { 1.0 };
                    // Lossy syntaxes: the percentiles move with the values, by the same tolerance.
                    let t = entry["tolerance"].as_f64().unwrap_or(1e-3);
                    if (w.width - expected_width).abs() > 2.0 * t || (hi > lo && ((got_lo - lo).abs() > t || (got_hi - hi).abs() > t)) {
                        failures.push(format!("{name}: percentile window {got_lo}..{got_hi}, numpy {lo}..{hi}"));
                    }
                }
                if let Some(voi) = entry["voi"].as_str() {
                    let expected = read_f32(voi);
                    let source = if entry["voi_lut"].as_bool() == Some(true) {
                        assert!(img.voi_lut.is_some(), "{name}: no VOI LUT");
                        WindowSource::VoiLut
                    } else {
                        WindowSource::File
                    };
                    assert_eq!(img.window.source, source, "{name}");
                    let got: Vec<f32> = (0..img.frames).flat_map(|f| img.normalised_frame(f).unwrap().into_data()).collect();
                    let diff = max_abs_diff(&got, &expected);
                    report.push(format!("{name}: max |VOI diff| {diff}"));
                    // Lossy: the value tolerance through the window's slope.
                    let voi_tolerance = 1e-4 + entry["tolerance"].as_f64().map_or(0.0, |t| t / img.window.width) as f32;
                    if diff > voi_tolerance {
                        failures.push(format!("{name}: windowed values differ from pydicom's apply_voi_lut by {diff}"));
                    }
                }
            }
            ("ok", Err(e)) => failures.push(format!("{name}: expected to decode, got {} ({e})", e.code())),
            (code, Ok(_)) => failures.push(format!("{name}: expected {code}, but it decoded")),
            (code, Err(e)) => {
                report.push(format!("{name}: {} ({e})", e.code()));
                if e.code() != code {
                    failures.push(format!("{name}: expected {code}, got {} ({e})", e.code()));
                }
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_declared_image_matches_what_decodes_in_every_transfer_syntax() {
    let mut checked = 0;
    for entry in manifest()["files"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let bytes = fixture_file(name);
        let Ok(image) = decode(&bytes, &DecodeLimits::default()) else { continue };
        let declared = radsight_dicom::declared_image(&bytes).unwrap_or_else(|| panic!("{name}: a decodable file declares its image"));
        assert_eq!(
            (declared.rows, declared.columns, declared.frames.unwrap_or(1)),
            (Some(image.rows), Some(image.columns), image.frames),
            "{name}"
        );
        assert_eq!(
            declared.samples(),
            u64::from(image.rows) * u64::from(image.columns) * u64::from(image.frames) * u64::from(image.samples_per_pixel)
        );
        checked += 1;
    }
    assert!(checked > 10, "{checked} files checked");
    assert!(radsight_dicom::declared_image(b"not dicom").is_none());
}

#[test]
fn the_same_pixels_hash_the_same_in_every_lossless_transfer_syntax() {
    let hash = |name: &str| decode(&fixture_file(name), &DecodeLimits::default()).unwrap().pixel_sha256_hex();
    let reference = hash("MR_small.dcm");
    for name in ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm"] {
        assert_eq!(hash(name), reference, "{name}");
    }
    assert_eq!(hash("rtdose.dcm"), hash("rtdose_rle.dcm"));
    assert_eq!(hash("rtdose.dcm"), hash("rtdose_expb.dcm"));
    assert_ne!(hash("CT_small.dcm"), reference);
}

#[test]
fn a_stream_without_the_128_byte_preamble_decodes_the_same() {
    let bytes = fixture_file("MR_small.dcm");
    let with = decode(&bytes, &DecodeLimits::default()).unwrap();
    let without = decode(&bytes[128..], &DecodeLimits::default()).unwrap();
    assert_eq!(with, without);
    assert_eq!(with.pixel_sha256_hex().len(), 64);
}

#[test]
fn a_jpeg_precision_other_than_8_or_12_is_refused_with_its_precision_and_uid() {
    let mut bytes = fixture_file("JPGExtended.dcm");
    // The SOF1 segment's precision byte: 12 -> 16 (no DCT process has 16-bit samples).
    let sof = bytes.windows(4).position(|w| w[0] == 0xFF && w[1] == 0xC1 && w[3] == 0x0B).expect("an SOF1 marker");
    assert_eq!(bytes[sof + 4], 12);
    bytes[sof + 4] = 16;
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    match &err {
        DecodeError::UnsupportedJpegPrecision { uid, precision } => {
            assert_eq!((uid.as_str(), *precision), ("1.2.840.10008.1.2.4.51", 16));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_permanent());
}

#[test]
fn a_file_without_a_window_gets_the_percentile_window_and_values_in_unit_range() {
    let img = decode(&fixture_file("CT_small.dcm"), &DecodeLimits::default()).unwrap();
    assert_eq!(img.window.source, WindowSource::Percentile { low: 0.5, high: 99.5 });
    let frame = img.normalised_frame(0).unwrap();
    assert_eq!((frame.width(), frame.height()), (128, 128));
    assert!(frame.data().iter().all(|v| (0.0..=1.0).contains(v)));
    let below = frame.data().iter().filter(|&&v| v == 0.0).count() as f64 / 16384.0;
    let above = frame.data().iter().filter(|&&v| v == 1.0).count() as f64 / 16384.0;
    assert!(below <= 0.01 && above <= 0.01, "{below} {above}");
    assert_eq!(img.modality.as_deref(), Some("CT"));
    assert!(img.sop_instance_uid.is_some() && img.study_instance_uid.is_some());
    let png = frame.to_png_gray8().unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn truncated_copies_give_corrupt_errors() {
    let originals = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm", "rtdose_rle.dcm"];
    for name in originals {
        let bytes = fixture_file(name);
        // Cut in the header, in the pixel data and one byte short.
        // One byte short cuts only the sequence delimiter of encapsulated data: either an error,
        // or exactly the pixels of the whole file.
        let whole = decode(&bytes, &DecodeLimits::default()).unwrap();
        if let Ok(img) = decode(&bytes[..bytes.len() - 1], &DecodeLimits::default()) {
            assert_eq!(img.modality_values, whole.modality_values, "{name} one byte short");
        }
        for cut in [140, 400, bytes.len() / 2, bytes.len() - 200] {
            let err = decode(&bytes[..cut], &DecodeLimits::default());
            let err = err.err().unwrap_or_else(|| panic!("{name} cut at {cut} decoded"));
            // Cut before Rows/Columns, a data set is indistinguishable from a non-image.
            let allowed: &[&str] = if cut == 400 { &["dicom-corrupt", "dicom-not-image"] } else { &["dicom-corrupt"] };
            assert!(allowed.contains(&err.code()), "{name} cut at {cut}: {} {err}", err.code());
        }
    }
    let err = decode(b"not dicom at all", &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.code(), "dicom-corrupt");
}

#[test]
fn random_garbage_anywhere_in_any_fixture_file_gives_an_error_or_an_image_never_a_panic() {
    // Deterministic xorshift mutations: 16-byte spans of garbage after the preamble, in every
    // small fixture file (headers, sequences, lengths, fragments and pixels alike).
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut errors, mut images) = (0, 0);
    for entry in manifest()["files"].as_array().unwrap() {
        let bytes = fixture_file(entry["name"].as_str().unwrap());
        if bytes.len() > 200_000 {
            continue; // keeps the debug-mode test fast; the mutations below are per file
        }
        for _ in 0..60 {
            let mut copy = bytes.clone();
            let at = 132 + (next() as usize % (bytes.len() - 132));
            let garbage = next();
            for (i, b) in copy[at..].iter_mut().take(16).enumerate() {
                *b ^= (garbage >> (i % 8 * 8)) as u8 | 1;
            }
            let t = std::time::Instant::now();
            let r = decode(&copy, &DecodeLimits::default());
            // A corrupt length once made dicom-parser zero-fill gigabytes (10-50 s here).
            assert!(t.elapsed().as_secs() < 10, "{} mutation took {:?}", entry["name"], t.elapsed());
            match r {
                Ok(_) => images += 1,
                Err(_) => errors += 1,
            }
        }
    }
    println!("{errors} errors, {images} images");
}

#[test]
fn a_corrupt_element_length_is_refused_before_the_parser_allocates_it() {
    // PixelData of CT_small (explicit VR LE, OW): 7FE0,0010 'OW' 00 00 then the 4-byte length.
    let mut bytes = fixture_file("CT_small.dcm");
    let at = bytes.windows(6).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W']).unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let started = std::time::Instant::now();
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::ReadDataSet { .. }), "{err:?}");
    assert!(err.to_string().contains("(7FE0,0010) declares 4026531840 bytes"), "{err}");
    assert!(started.elapsed().as_secs() < 2, "took {:?}", started.elapsed());
}

#[test]
fn sequences_nested_too_deep_are_refused() {
    // Forty undefined-length sequences, each holding one undefined-length item.
    let mut data = Vec::new();
    for _ in 0..40 {
        data.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let bytes = Spec::grey16(1, 1, vec![1]).bytes();
    // Insert the nest right after the file meta group (before the first data set element).
    let at = bytes.windows(4).position(|w| w == [0x08, 0x00, 0x16, 0x00]).unwrap();
    let mut nested = bytes[..at].to_vec();
    nested.extend_from_slice(&data);
    nested.extend_from_slice(&bytes[at..]);
    let err = decode(&nested, &DecodeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 32"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Hand-built objects

struct Spec {
    ts: &'static str,
    rows: u16,
    columns: u16,
    frames: Option<&'static str>,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    photometric: &'static str,
    pixels: PrimitiveValue,
    extra: Vec<DataElement<InMemDicomObject>>,
}

impl Spec {
    fn grey16(rows: u16, columns: u16, words: Vec<u16>) -> Spec {
        Spec {
            ts: "1.2.840.10008.1.2.1",
            rows,
            columns,
            frames: None,
            bits_allocated: 16,
            bits_stored: 16,
            signed: false,
            photometric: "MONOCHROME2",
            pixels: PrimitiveValue::U16(words.into()),
            extra: Vec::new(),
        }
    }

    fn bytes(self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let us = |tag: Tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7")));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")));
        obj.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("OT")));
        obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(self.photometric)));
        if let Some(frames) = self.frames {
            obj.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from(frames)));
        }
        obj.put(us(tags::ROWS, self.rows));
        obj.put(us(tags::COLUMNS, self.columns));
        obj.put(us(tags::BITS_ALLOCATED, self.bits_allocated));
        obj.put(us(tags::BITS_STORED, self.bits_stored));
        obj.put(us(tags::HIGH_BIT, self.bits_stored - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, self.signed.into()));
        for e in self.extra {
            obj.put(e);
        }
        let vr = if self.bits_allocated > 8 { VR::OW } else { VR::OB };
        obj.put(DataElement::new(tags::PIXEL_DATA, vr, self.pixels));
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(self.ts)
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("1.2.3.4");
        let file = obj.with_meta(meta).unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }
}

fn ds(tag: Tag, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::DS, PrimitiveValue::from(value))
}

fn close(got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
    assert!(max_abs_diff(got, expected) < 1e-6, "{got:?} vs {expected:?}");
}

#[test]
fn monochrome1_is_inverted_after_the_file_window() {
    let mut spec = Spec::grey16(1, 4, vec![0, 100, 200, 300]);
    spec.photometric = "MONOCHROME1";
    // Multi-valued: the first value is used.
    spec.extra = vec![ds(tags::WINDOW_CENTER, "150\\40"), ds(tags::WINDOW_WIDTH, "201\\400")];
    let img = decode(&spec.bytes(), &DecodeLimits::default()).unwrap();
    assert_eq!((img.window.center, img.window.width, img.window.function), (150.0, 201.0, VoiFunction::Linear));
    assert_eq!(img.window.source, WindowSource::File);
    // LINEAR: ((x - 149.5) / 200 + 0.5), clamped; then 1 - y.
    close(img.normalised_frame(0).unwrap().data(), &[1.0, 0.7475, 0.2475, 0.0]);
}

#[test]
fn signed_pixels_with_bits_stored_below_bits_allocated_are_masked_sign_extended_and_rescaled() {
    // 12 bits stored in 16; the top four bits carry garbage (e.g. overlay bits).
    let mut spec = Spec::grey16(1, 5, vec![0x0FFF, 0x0800, 0x07FF, 0xF001, 0xA000]);
    spec.bits_stored = 12;
    spec.signed = true;
    spec.extra = vec![ds(tags::RESCALE_SLOPE, "2"), ds(tags::RESCALE_INTERCEPT, "-10")];
    let img = decode(&spec.bytes(), &DecodeLimits::default()).unwrap();
    // raw: -1, -2048, 2047, 1, 0  -> x2 - 10
    close(&img.modality_values, &[-12.0, -4106.0, 4084.0, -8.0, -10.0]);
    assert!(img.signed);
}

#[test]
fn unsigned_bits_stored_below_bits_allocated_are_masked() {
    let mut spec = Spec::grey16(1, 3, vec![0xF000, 0x1FFF, 0x0ABC]);
    spec.bits_stored = 12;
    let img = decode(&spec.bytes(), &DecodeLimits::default()).unwrap();
    close(&img.modality_values, &[0.0, 4095.0, 2748.0]);
}

#[test]
fn multi_frame_objects_expose_every_frame_and_default_to_the_middle_one() {
    let mut spec = Spec::grey16(2, 2, (0..12).collect());
    spec.frames = Some("3");
    let img = decode(&spec.bytes(), &DecodeLimits::default()).unwrap();
    assert_eq!((img.frames, img.default_frame()), (3, 1));
    close(img.frame_values(0).unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    close(img.frame_values(2).unwrap(), &[8.0, 9.0, 10.0, 11.0]);
    assert!(img.frame_values(3).is_none() && img.normalised_frame(3).is_none());
    // No window in the file: percentiles of the middle frame (4..7), here 0 % to 100 %.
    let options = DecodeOptions { percentiles: Percentiles { low: 0.0, high: 100.0 }, ..DecodeOptions::default() };
    let img = decode_with(
        &{
            let mut s = Spec::grey16(2, 2, (0..12).collect());
            s.frames = Some("3");
            s.bytes()
        },
        &options,
    )
    .unwrap();
    assert_eq!((img.window.center, img.window.width), (5.5, 3.0));
    close(img.normalised_frame(1).unwrap().data(), &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    close(img.normalised_frame(0).unwrap().data(), &[0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn enhanced_multi_frame_rescale_is_taken_per_frame_from_the_functional_groups() {
    let item = |slope: &str, intercept: &str| {
        let mut pvt = InMemDicomObject::new_empty();
        pvt.put(ds(tags::RESCALE_SLOPE, slope));
        pvt.put(ds(tags::RESCALE_INTERCEPT, intercept));
        let mut group = InMemDicomObject::new_empty();
        group.put(DataElement::new(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, VR::SQ, DataSetSequence::from(vec![pvt])));
        group
    };
    let mut spec = Spec::grey16(1, 2, vec![1, 2, 1, 2]);
    spec.frames = Some("2");
    spec.extra = vec![DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item("1", "0"), item("10", "-1000")]),
    )];
    let img = decode(&spec.bytes(), &DecodeLimits::default()).unwrap();
    close(&img.modality_values, &[1.0, 2.0, -990.0, -980.0]);

    // One frame without a rescale among frames with one: refused, not guessed.
    let mut spec = Spec::grey16(1, 2, vec![1, 2, 1, 2]);
    spec.frames = Some("2");
    spec.extra = vec![DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item("1", "0"), InMemDicomObject::new_empty()]),
    )];
    let err = decode(&spec.bytes(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidAttribute { keyword: "PerFrameFunctionalGroupsSequence" }), "{err:?}");
}

#[test]
fn an_unknown_transfer_syntax_is_refused_with_its_uid() {
    let bytes = Spec::grey16(1, 1, vec![1]).bytes();
    // Same length as 1.2.840.10008.1.2.1, so the meta group length stays right.
    let at = bytes.windows(19).position(|w| w == b"1.2.840.10008.1.2.1").unwrap();
    let mut patched = bytes.clone();
    patched[at..at + 19].copy_from_slice(b"1.2.840.99999.1.2.1");
    let err = decode(&patched, &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.to_string(), "unsupported transfer syntax 1.2.840.99999.1.2.1");
}

#[test]
fn a_60000_by_60000_header_is_refused_before_any_pixel_is_read() {
    // Eight bytes of pixel data: if the limit were checked late, this would be a truncation error.
    let bytes = Spec::grey16(60000, 60000, vec![0; 4]).bytes();
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "Rows", value: 60000, limit: 16384 }), "{err:?}");
    assert_eq!(err.code(), "dicom-too-large");
    let limits = DecodeLimits { max_rows: 65535, max_columns: 65535, ..DecodeLimits::default() };
    let err = decode(&bytes, &limits).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "pixels per frame", value: 3_600_000_000, limit: 67_108_864 }), "{err:?}");
    let options = DecodeOptions { limits, max_pixels_per_frame: u64::MAX, ..DecodeOptions::default() };
    let err = decode_with(&bytes, &options).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "decoded pixel bytes", .. }), "{err:?}");
    let mut spec = Spec::grey16(1, 1, vec![0; 3]);
    spec.frames = Some("3");
    let err = decode(&spec.bytes(), &DecodeLimits { max_frames: 2, ..DecodeLimits::default() }).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "NumberOfFrames", value: 3, limit: 2 }), "{err:?}");
}

#[test]
fn native_pixel_data_shorter_than_the_header_says_is_truncated() {
    let err = decode(&Spec::grey16(4, 4, vec![0; 10]).bytes(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TruncatedPixelData { expected: 32, actual: 20 }), "{err:?}");
    assert_eq!(err.code(), "dicom-corrupt");
}

/// Part 10 bytes of `spec` with its PixelData replaced by encapsulated `fragments`.
fn encapsulated(mut spec: Spec, ts: &'static str, bits: u16, fragments: Vec<Vec<u8>>) -> Vec<u8> {
    spec.ts = ts;
    spec.bits_allocated = bits;
    spec.bits_stored = bits;
    spec.pixels = PrimitiveValue::Empty;
    let bytes = spec.bytes();
    let mut obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).unwrap();
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new_fragments(fragments)));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

#[test]
fn garbage_in_a_jpeg_fragment_is_a_codec_error() {
    // SOI, an 8-bit SOF0 header cut short, SOS, no data.
    let fragment = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0, 8, 0, 8, 1, 1, 0x11, 0, 0xFF, 0xDA, 1, 2];
    let bytes = encapsulated(Spec::grey16(8, 8, vec![]), "1.2.840.10008.1.2.4.50", 8, vec![fragment]);
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.code(), "dicom-corrupt", "{err}");
}

#[test]
fn an_rle_fragment_too_short_for_the_header_is_refused_before_allocating_the_frame() {
    // One segment header, 16384 x 16384 pixels claimed from 70 bytes.
    let mut fragment = vec![0u8; 64];
    fragment[0] = 1;
    fragment[4] = 64;
    fragment.extend_from_slice(&[0x81, 0x00, 0x81, 0x00, 0x81, 0x00]);
    let bytes = encapsulated(Spec::grey16(16384, 16384, vec![]), "1.2.840.10008.1.2.5", 8, vec![fragment]);
    // By default the per-frame pixel budget (64 Mi) refuses it from the header alone.
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "pixels per frame", .. }), "{err:?}");
    let options = DecodeOptions { max_pixels_per_frame: u64::MAX, ..DecodeOptions::default() };
    let started = std::time::Instant::now();
    let err = decode_with(&bytes, &options).unwrap_err();
    assert!(err.to_string().contains("fragment too short"), "{err}");
    assert!(started.elapsed().as_secs() < 2, "took {:?}", started.elapsed());
}

#[test]
fn a_small_rle_object_decodes_exactly() {
    // 2 x 3, 16-bit: segment 0 holds the high bytes, segment 1 the low bytes (PS3.5 G.2).
    let mut fragment = vec![0u8; 64];
    fragment[0] = 2;
    fragment[4] = 64;
    fragment[8] = 64 + 7;
    fragment.extend_from_slice(&[0x05, 0, 0, 0, 1, 1, 0xFF]); // literal run of 6 high bytes
    fragment.extend_from_slice(&[0xFB, 0x02, 0x00]); // repeat 0x02 six times
    let bytes = encapsulated(Spec::grey16(2, 3, vec![]), "1.2.840.10008.1.2.5", 16, vec![fragment]);
    let img = decode(&bytes, &DecodeLimits::default()).unwrap();
    close(&img.modality_values, &[2.0, 2.0, 2.0, 258.0, 258.0, 65282.0]);
}

#[test]
fn palette_colour_and_missing_pixels_are_refused_clearly() {
    let mut spec = Spec::grey16(1, 1, vec![1]);
    spec.photometric = "PALETTE COLOR";
    let err = decode(&spec.bytes(), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.code(), "dicom-unsupported-image");
    assert!(err.to_string().contains("PALETTE COLOR"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Resize and letterbox

#[test]
fn resize_matches_pillow_bilinear() {
    let reference: serde_json::Value = serde_json::from_slice(&fixture_file("resize.json")).unwrap();
    let f32s = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let w = reference["width"].as_u64().unwrap() as u32;
    let h = reference["height"].as_u64().unwrap() as u32;
    let src = GrayImage::new(w, h, f32s(&reference["data"])).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let (tw, th) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let got = src.resize(tw, th);
        let diff = max_abs_diff(got.data(), &f32s(&case["data"]));
        assert!(diff < 1e-5, "{tw}x{th}: differs from Pillow by {diff}");
    }
}

#[test]
fn letterbox_records_scale_and_padding_and_round_trips_points() {
    let src = GrayImage::new(200, 100, (0..20000).map(|i| (i % 200) as f32 / 199.0).collect()).unwrap();
    let (input, lb) = letterbox(&src, 128);
    assert_eq!((input.width(), input.height()), (128, 128));
    assert_eq!((lb.scaled_width, lb.scaled_height, lb.pad_x, lb.pad_y), (128, 64, 0, 32));
    assert_eq!((lb.source_width, lb.source_height, lb.size, lb.scale), (200, 100, 128, 0.64));
    // Padding rows are black, content rows are not.
    assert_eq!(input.get(127, 0), Some(0.0));
    assert_eq!(input.get(127, 127), Some(0.0));
    assert!(input.get(127, 64).unwrap() > 0.9);
    for (x, y) in [(0.0, 0.0), (37.25, 81.5), (200.0, 100.0), (199.5, 0.5)] {
        let (mx, my) = lb.to_model_point(x, y);
        let (sx, sy) = lb.to_source_point(mx, my);
        assert!((sx - x).abs() < 1e-9 && (sy - y).abs() < 1e-9, "({x},{y}) -> ({sx},{sy})");
    }
    assert_eq!(lb.to_source_point(0.0, 32.0), (0.0, 0.0));
    assert_eq!(lb.to_source_point(128.0, 96.0), (200.0, 100.0));
    let b = lb.to_source_box(PixelBox { x0: 64.0, y0: 0.0, x1: 96.0, y1: 64.0 });
    assert_eq!(b, PixelBox { x0: 100.0, y0: 0.0, x1: 150.0, y1: 50.0 });

    // A tall image pads left and right.
    let (_, tall) = letterbox(&GrayImage::new(30, 90, vec![0.5; 2700]).unwrap(), 96);
    assert_eq!((tall.scaled_width, tall.scaled_height, tall.pad_x, tall.pad_y), (32, 96, 32, 0));
}

#[test]
fn a_model_map_maps_back_onto_the_source_grid() {
    let src = GrayImage::new(200, 100, vec![0.0; 20000]).unwrap();
    let (_, lb) = letterbox(&src, 128);
    // A map that is the model x coordinate of each pixel centre: back on the source it must be
    // the model x of each source pixel centre (bilinear reproduces linear functions).
    let map = GrayImage::new(128, 128, (0..128 * 128).map(|i| (i % 128) as f32 + 0.5).collect()).unwrap();
    let back = lb.map_to_source(&map).unwrap();
    assert_eq!((back.width(), back.height()), (200, 100));
    for x in [1u32, 57, 198] {
        let expected = lb.to_model_point(f64::from(x) + 0.5, 0.0).0 as f32;
        assert!((back.get(x, 50).unwrap() - expected).abs() < 1e-4, "x={x}");
    }
    let wrong = GrayImage::new(64, 64, vec![0.0; 4096]).unwrap();
    assert!(lb.map_to_source(&wrong).is_err());
}

#[test]
fn a_model_map_maps_onto_a_shrunk_grid_as_the_block_mean_of_the_source_grid() {
    // 2048 x 1536 shrunk by 2, and 200 x 100 by 3 (partial blocks at the right and bottom).
    for (w, h, size, k) in [(2048u32, 1536u32, 96u32, 2u32), (200, 100, 128, 3)] {
        let (_, lb) = letterbox(&GrayImage::new(w, h, vec![0.0; (w * h) as usize]).unwrap(), size);
        // A smooth map: a bump in the middle of the model grid.
        let c = size as f32 / 2.0;
        let map = GrayImage::new(
            size,
            size,
            (0..size * size)
                .map(|i| {
                    let (x, y) = ((i % size) as f32 + 0.5 - c, (i / size) as f32 + 0.5 - c);
                    (-(x * x + y * y) / (2.0 * (size as f32 / 6.0).powi(2))).exp()
                })
                .collect(),
        )
        .unwrap();
        let display = lb.map_to_display(&map, k).unwrap();
        assert_eq!((display.width(), display.height()), (w.div_ceil(k), h.div_ceil(k)));
        let source = lb.map_to_source(&map).unwrap();
        let mut worst = 0f32;
        for dy in 0..display.height() {
            for dx in 0..display.width() {
                let (mut sum, mut n) = (0f32, 0f32);
                for y in dy * k..((dy + 1) * k).min(h) {
                    for x in dx * k..((dx + 1) * k).min(w) {
                        sum += source.get(x, y).unwrap();
                        n += 1.0;
                    }
                }
                worst = worst.max((display.get(dx, dy).unwrap() - sum / n).abs());
            }
        }
        assert!(worst < 2e-3, "{w}x{h}/{k}: the block mean differs by up to {worst}");
    }
    let (_, lb) = letterbox(&GrayImage::new(20, 10, vec![0.0; 200]).unwrap(), 16);
    assert!(lb.map_to_display(&GrayImage::new(8, 8, vec![0.0; 64]).unwrap(), 2).is_err());
}

// ---------------------------------------------------------------------------------------------
// Memory cases (issues 11 and 13): each runs in a child process (this test binary, filtered to
// `memory_case_child_entry_point`), which reports its peak RSS (VmHWM); each must stay under
// 512 MB and end in an image or a typed error within seconds.

const MEMORY_CASE_ENV: &str = "RADSIGHT_DICOM_MEMORY_CASE";
const PEAK_RSS_LIMIT_KB: u64 = 512 * 1024;

/// Not a test by itself: the child side of `memory_cases_*` (does nothing unless the parent set
/// the environment variable).
#[test]
fn memory_case_child_entry_point() {
    let Ok(case) = std::env::var(MEMORY_CASE_ENV) else {
        return;
    };
    let (kind, path) = case.split_once(':').unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut outcomes = std::collections::BTreeSet::new();
    let mut record = |r: Result<radsight_dicom::DecodedImage, DecodeError>| {
        outcomes.insert(match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        });
    };
    match kind {
        // Every other value of the byte at 903 (the low byte of an element length).
        "byte903" => {
            for b in 0..=255u8 {
                if b == bytes[903] {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[903] = b;
                record(decode(&changed, &DecodeLimits::default()));
            }
        }
        _ => record(decode(&bytes, &DecodeLimits::default())),
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim().to_string();
    println!("VMHWM_KB={hwm}");
    println!("OUTCOMES={}", outcomes.into_iter().collect::<Vec<_>>().join(","));
}

/// Runs one memory case in a child process; returns (peak RSS in kB, outcomes, seconds).
fn run_memory_case(case: &str) -> (u64, String, f64) {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "memory_case_child_entry_point", "--nocapture", "--test-threads=1"])
        .env(MEMORY_CASE_ENV, case)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child for {case} failed: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    (field("VMHWM_KB=").parse().unwrap(), field("OUTCOMES="), seconds)
}

fn memory_case_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dicom-memory-cases");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A deflated Part 10 object: meta group (Deflated Explicit VR Little Endian) + `deflated`.
fn deflated_part10(deflated: &[u8]) -> Vec<u8> {
    let ts = b"1.2.840.10008.1.2.1.99\0";
    let sop = b"1.2.3.4\0";
    let class = b"1.2.840.10008.5.1.4.1.1.7\0";
    let mut elements = Vec::new();
    let mut element = |element: u16, vr: &[u8; 2], value: &[u8]| {
        elements.extend_from_slice(&0x0002u16.to_le_bytes());
        elements.extend_from_slice(&element.to_le_bytes());
        elements.extend_from_slice(vr);
        if vr == b"OB" {
            elements.extend_from_slice(&[0, 0]);
            elements.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            elements.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        elements.extend_from_slice(value);
    };
    element(0x0001, b"OB", &[0, 1]);
    element(0x0002, b"UI", class);
    element(0x0003, b"UI", sop);
    element(0x0010, b"UI", ts);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(elements.len() as u32).to_le_bytes());
    out.extend_from_slice(&elements);
    out.extend_from_slice(deflated);
    out
}

/// Explicit VR little endian elements of a grey 8-bit image header (group 0028).
fn grey8_header(rows: u16, columns: u16) -> Vec<u8> {
    let mut d = Vec::new();
    let mut us = |element: u16, v: u16| {
        d.extend_from_slice(&0x0028u16.to_le_bytes());
        d.extend_from_slice(&element.to_le_bytes());
        d.extend_from_slice(b"US");
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&v.to_le_bytes());
    };
    us(0x0002, 1);
    let mut pi = Vec::new();
    pi.extend_from_slice(&0x0028u16.to_le_bytes());
    pi.extend_from_slice(&0x0004u16.to_le_bytes());
    pi.extend_from_slice(b"CS");
    pi.extend_from_slice(&12u16.to_le_bytes());
    pi.extend_from_slice(b"MONOCHROME2 ");
    d.extend_from_slice(&pi);
    let mut us = |element: u16, v: u16| {
        d.extend_from_slice(&0x0028u16.to_le_bytes());
        d.extend_from_slice(&element.to_le_bytes());
        d.extend_from_slice(b"US");
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&v.to_le_bytes());
    };
    us(0x0010, rows);
    us(0x0011, columns);
    us(0x0100, 8);
    us(0x0101, 8);
    us(0x0102, 7);
    us(0x0103, 0);
    d
}

fn ob_header(group: u16, element: u16, len: u32) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&group.to_le_bytes());
    d.extend_from_slice(&element.to_le_bytes());
    d.extend_from_slice(b"OB\0\0");
    d.extend_from_slice(&len.to_le_bytes());
    d
}

/// Deflates `prefix`, then `zeros` zero bytes (in 1 MiB blocks that, being all zeros, can be
/// repeated verbatim: back-references only ever see zeros), then `suffix`.
fn deflate_with_zeros(prefix: &[u8], zeros: u64, suffix: &[u8]) -> Vec<u8> {
    use std::io::Write;
    const MIB: usize = 1 << 20;
    let block = vec![0u8; MIB];
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(prefix).unwrap();
    let whole = zeros / MIB as u64;
    let rest = (zeros % MIB as u64) as usize;
    let mut out = Vec::new();
    if whole >= 2 {
        encoder.write_all(&block).unwrap();
        encoder.flush().unwrap();
        out.append(encoder.get_mut());
        encoder.write_all(&block).unwrap();
        encoder.flush().unwrap();
        let repeated = std::mem::take(encoder.get_mut());
        for _ in 1..whole {
            out.extend_from_slice(&repeated);
        }
    } else {
        for _ in 0..whole {
            encoder.write_all(&block).unwrap();
        }
    }
    encoder.write_all(&block[..rest]).unwrap();
    encoder.write_all(suffix).unwrap();
    out.extend_from_slice(&encoder.finish().unwrap());
    out
}

#[test]
fn memory_cases_a_changed_length_byte_in_the_big_endian_file_stays_bounded() {
    // ExplVR_BigEnd.dcm, byte 903: the low byte of SamplesPerPixel's length; one value of it
    // made the old decoder take 2.8 GB. All 255 other values, in one child.
    let path = fixture_dir().join("ExplVR_BigEnd.dcm");
    let (kb, outcomes, seconds) = run_memory_case(&format!("byte903:{}", path.display()));
    println!("ExplVR_BigEnd byte 903 x255: peak {kb} kB, {seconds:.1} s, outcomes {outcomes}");
    assert!(kb < PEAK_RSS_LIMIT_KB, "peak RSS {kb} kB");
    assert!(seconds < 60.0, "took {seconds} s");
}

#[test]
fn memory_cases_a_deflated_16384_square_image_is_refused_before_inflating_its_pixels() {
    let pixels: u64 = 16384 * 16384;
    let mut prefix = grey8_header(16384, 16384);
    prefix.extend_from_slice(&ob_header(0x7FE0, 0x0010, pixels as u32));
    let file = deflated_part10(&deflate_with_zeros(&prefix, pixels, &[]));
    assert!(file.len() < 2 << 20, "{} bytes", file.len());
    let path = memory_case_dir().join("deflated_16384.dcm");
    std::fs::write(&path, &file).unwrap();
    let (kb, outcomes, seconds) = run_memory_case(&format!("file:{}", path.display()));
    println!("deflated 16384x16384 ({} bytes): peak {kb} kB, {seconds:.1} s, outcome {outcomes}", file.len());
    assert_eq!(outcomes, "dicom-too-large");
    assert!(kb < PEAK_RSS_LIMIT_KB, "peak RSS {kb} kB");
    // And in-process: the per-frame pixel budget names it.
    let err = decode(&file, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { what: "pixels per frame", .. }), "{err:?}");
}

#[test]
fn memory_cases_a_deflated_gigabyte_before_the_pixels_is_refused_at_the_header_cap() {
    // A 512 x 512 image behind a 1 GiB private OB element: the old decoder inflated up to its
    // 1 GiB cap; now at most 64 MiB are inflated before PixelData.
    let mut prefix = grey8_header(512, 512);
    prefix.extend_from_slice(&ob_header(0x0009, 0x1010, 1 << 30));
    let mut suffix = ob_header(0x7FE0, 0x0010, 512 * 512);
    suffix.extend(std::iter::repeat_n(7u8, 512 * 512));
    let file = deflated_part10(&deflate_with_zeros(&prefix, 1 << 30, &suffix));
    let path = memory_case_dir().join("deflated_gigabyte.dcm");
    std::fs::write(&path, &file).unwrap();
    let (kb, outcomes, seconds) = run_memory_case(&format!("file:{}", path.display()));
    println!("deflated 1 GiB before PixelData ({} bytes): peak {kb} kB, {seconds:.1} s, outcome {outcomes}", file.len());
    assert_eq!(outcomes, "dicom-too-large");
    assert!(kb < PEAK_RSS_LIMIT_KB, "peak RSS {kb} kB");
    // A deflated image whose pixels follow a small header decodes (the cap is derived from it).
    let mut prefix = grey8_header(512, 512);
    prefix.extend_from_slice(&ob_header(0x7FE0, 0x0010, 512 * 512));
    let file = deflated_part10(&deflate_with_zeros(&prefix, 512 * 512, &[]));
    let img = decode(&file, &DecodeLimits::default()).unwrap();
    assert_eq!((img.rows, img.columns), (512, 512));
}

#[test]
fn a_two_gigabyte_pixel_data_in_a_small_header_is_refused_without_allocating_it() {
    // A 1 KB explicit VR little endian file whose PixelData declares 2 GB, for a header whose
    // size is within the limits (8192 x 8192 x 16 frames x 16 bits) and for one that is not.
    for (rows, frames) in [(8192u16, Some("16")), (46341, None)] {
        let mut spec = Spec::grey16(rows, rows, vec![0; 4]);
        spec.frames = frames;
        let mut bytes = spec.bytes();
        let pos = bytes.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
        bytes[pos + 8..pos + 12].copy_from_slice(&2_147_483_648u32.to_le_bytes());
        assert!(bytes.len() < 2048, "{}", bytes.len());
        let started = std::time::Instant::now();
        let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
        assert!(started.elapsed().as_millis() < 500, "{:?}", started.elapsed());
        assert!(matches!(err.code(), "dicom-corrupt" | "dicom-too-large"), "{err:?}");
    }
}

#[test]
fn an_undefined_length_un_is_scanned_in_the_encoding_the_parser_reads_it_in() {
    // dicom-parser reads the items of an undefined-length UN in the data set's own explicit VR,
    // not in the implicit VR PS3.5 6.2.2 prescribes, so the pre-scan must too. Here the item's
    // element reads, in implicit VR, as a harmless 83-byte value; in explicit VR (an unknown VR,
    // so a 32-bit length) it declares 0xFFFDFFF8 bytes, which the parser would zero-fill (the
    // fuzz target's 4 GB allocation, fuzz/regressions/parser-un-items-explicit-4gb.dcm).
    let mut bytes = Spec::grey16(2, 2, vec![0; 4]).bytes();
    let pixel_data = bytes.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
    let mut un = Vec::new();
    un.extend_from_slice(&[0x09, 0x00, 0x01, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    un.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    un.extend_from_slice(&[0x09, 0x00, 0x02, 0x10, b'S', 0, 0, 0, 0xF8, 0xFF, 0xFD, 0xFF]);
    // The rest of the 83 bytes the implicit reading sees, then the delimiters it expects.
    un.extend_from_slice(&[0; 79]);
    un.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    bytes.splice(pixel_data..pixel_data, un);
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.code(), "dicom-corrupt", "{err:?}");
    assert!(err.to_string().contains("declares 4294836216 bytes"), "{err}");

    let fuzzed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/parser-un-items-explicit-4gb.dcm")).unwrap();
    let err = decode(&fuzzed, &DecodeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("declares 4294836216 bytes"), "{err}");
}

#[test]
fn memory_cases_every_fuzz_regression_input_gives_an_image_or_a_typed_error_in_bounded_memory() {
    // Inputs the fuzz target (crates/dicom/fuzz) crashed on or ran out of memory with; each must
    // now return, within the memory cases' peak RSS (a child process each, so one input's
    // allocation cannot hide behind another test's).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let (kb, outcomes, seconds) = run_memory_case(&format!("file:{}", path.display()));
        println!("{}: peak {kb} kB, {seconds:.1} s, {outcomes}", path.display());
        assert!(kb < PEAK_RSS_LIMIT_KB, "{}: peak RSS {kb} kB", path.display());
        assert!(seconds < 10.0, "{}: {seconds} s", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn the_extended_offset_table_groups_frames_split_over_fragments() {
    // Three 2 x 3 16-bit RLE frames (as in a_small_rle_object_decodes_exactly), each split into
    // a header fragment and a data fragment, with an empty Basic Offset Table: only the
    // Extended Offset Table (7FE0,0001) says where each frame starts.
    let mut frame = vec![0u8; 64];
    frame[0] = 2;
    frame[4] = 64;
    frame[8] = 64 + 7;
    frame.extend_from_slice(&[0x05, 0, 0, 0, 1, 1, 0xFF]);
    frame.extend_from_slice(&[0xFB, 0x02, 0x00]);
    let (head, data) = frame.split_at(64);
    let fragments: Vec<Vec<u8>> = (0..3).flat_map(|_| [head.to_vec(), data.to_vec()]).collect();
    let build = |eot: Option<Vec<u64>>| {
        let mut spec = Spec::grey16(2, 3, vec![]);
        spec.frames = Some("3");
        spec.ts = "1.2.840.10008.1.2.5";
        spec.pixels = PrimitiveValue::Empty;
        let bytes = spec.bytes();
        let mut obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).unwrap();
        if let Some(offsets) = eot {
            obj.put(DataElement::new(tags::EXTENDED_OFFSET_TABLE, VR::OV, PrimitiveValue::U64(offsets.into_iter().collect())));
        }
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new_fragments(fragments.clone())));
        let mut out = Vec::new();
        obj.write_all(&mut out).unwrap();
        out
    };
    // Each frame is 8 + 64 + 8 + 10 = 90 bytes of items.
    let img = decode(&build(Some(vec![0, 90, 180])), &DecodeLimits::default()).unwrap();
    assert_eq!(img.frames, 3);
    let one = [2.0, 2.0, 2.0, 258.0, 258.0, 65282.0];
    close(&img.modality_values, &[one, one, one].concat());
    // Without it, six fragments for three frames cannot be grouped: refused, not guessed.
    let err = decode(&build(None), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.code(), "dicom-corrupt", "{err}");
    assert!(err.to_string().contains("no usable offset table"), "{err}");
}
