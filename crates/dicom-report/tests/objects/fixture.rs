//! The sample result every test writes, and helpers to read what was written.

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;
use radsight_dicom_report::{
    Algorithm, Anatomy, Code, DicomDate, DicomDateTime, DicomTime, Finding, OverlayImage, PatientSex, PixelSpacing, Receipt, Report,
    Saliency, SourceImage, StudyRef,
};

pub const STUDY_UID: &str = "1.2.826.0.1.3680043.8.498.11111";
pub const SERIES_UID: &str = "1.2.826.0.1.3680043.8.498.22222";
pub const SOURCE_UID: &str = "1.2.826.0.1.3680043.8.498.33333";
pub const SOURCE_UID_2: &str = "1.2.826.0.1.3680043.8.498.33334";
pub const CR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1";
pub const WEIGHTS: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// A C2SP signed note: origin, size, root hash, blank line, signature line (with its em dash).
pub const CHECKPOINT: &str = "radsight.example/audit\n42\nqUuSBRyNyoW3kpbjgE3cmSqxVv6mADm5JDPaqFxZoXE=\n\n\u{2014} radsight.example/audit Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

pub fn source(uid: &str) -> SourceImage {
    SourceImage { sop_class_uid: CR_STORAGE.into(), sop_instance_uid: uid.into(), series_instance_uid: SERIES_UID.into() }
}

pub fn report() -> Report {
    Report {
        study: StudyRef {
            study_instance_uid: STUDY_UID.into(),
            patient_id: "MRN-0042".into(),
            patient_name: Some("Doe^Jane".into()),
            patient_birth_date: Some(DicomDate::parse("19700101").unwrap()),
            patient_sex: Some(PatientSex::Female),
            accession_number: Some("ACC123".into()),
            study_id: Some("S1".into()),
            study_date: Some(DicomDate::parse("20240501").unwrap()),
            study_time: Some(DicomTime::parse("101500").unwrap()),
            referring_physician_name: Some("Smith^John".into()),
        },
        source_images: vec![source(SOURCE_UID), source(SOURCE_UID_2)],
        algorithm: Algorithm {
            model_id: "radsight-phantom-cxr".into(),
            model_version: "1.2.0".into(),
            weights_sha256_hex: WEIGHTS.into(),
            manufacturer: "radsight".into(),
        },
        findings: vec![
            Finding {
                label: "pneumothorax".into(),
                code: Code::new("36118008", "SCT", "Pneumothorax"),
                probability: 0.8731,
                threshold: 0.5,
                positive: true,
            },
            Finding {
                label: "pleural effusion".into(),
                code: Code::new("RID34539", "RADLEX", "pleural effusion"),
                // Not representable in 16 DS characters: the FD must carry it exactly.
                probability: 0.1 + 0.2,
                threshold: 0.45,
                positive: false,
            },
        ],
        saliency: Some(Saliency { method: "Grad-CAM".into(), faithfulness_metric_name: "deletion AUC".into(), faithfulness_value: 0.1875 }),
        result_id: "res_01HZX3".into(),
        result_url: Some("https://radsight.example/results/res_01HZX3".into()),
        observed_at: DicomDateTime::parse("20240501", "103000.250").unwrap(),
        procedure_reported: Some(Code::new("399208008", "SCT", "Plain chest X-ray")),
        receipt: Some(Receipt {
            leaf_index: 17,
            tree_size: 42,
            entry_base64: "eyJraW5kIjoicmVzdWx0Iiwic2VxIjoxN30=".into(),
            proof_base64: vec![
                "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                "u6urqwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            ],
            checkpoint: CHECKPOINT.into(),
            log_origin: "radsight.example/audit".into(),
        }),
    }
}

/// A 5×3 gradient: odd byte count (45), so the pixel data padding is exercised.
pub fn overlay() -> OverlayImage {
    let (width, height) = (5u16, 3u16);
    let mut rgb = Vec::new();
    for y in 0..height {
        for x in 0..width {
            rgb.extend_from_slice(&[(x * 50) as u8, (y * 100) as u8, 200]);
        }
    }
    OverlayImage {
        width,
        height,
        rgb,
        pixel_spacing_mm: Some(PixelSpacing { row_mm: 0.143, column_mm: 0.143 }),
        source: source(SOURCE_UID),
        anatomy: Some(Anatomy { body_part_examined: "CHEST".into(), laterality: None }),
    }
}

/// A fresh directory for files the external tools read (under the target dir).
pub fn out_dir() -> PathBuf {
    tempfile::Builder::new().prefix("dicom-report-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap().keep()
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn parse(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
    dicom_object::from_reader(&bytes[128..]).expect("the written bytes parse as Part 10")
}

pub fn string(obj: &InMemDicomObject, tag: Tag) -> String {
    element(obj, tag).to_str().unwrap().to_string()
}

pub fn element(obj: &InMemDicomObject, tag: Tag) -> &InMemElement {
    obj.element(tag).unwrap_or_else(|_| panic!("{tag} missing"))
}

pub fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    element(obj, tag).items().unwrap_or_else(|| panic!("{tag} is not a sequence"))
}
