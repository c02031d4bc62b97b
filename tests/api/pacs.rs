//! The test PACS: the real Orthanc (with its DICOMweb plugin) that `scripts/test.sh` starts,
//! and small but valid DICOM Part 10 instances to load into it with `POST /instances`.

use radsight::analysis::phantom_dicom::element;

/// Orthanc's base URL; its DICOMweb root is `{url}/dicom-web`.
pub fn orthanc_url() -> String {
    std::env::var("RADSIGHT_TEST_ORTHANC_URL")
        .expect("RADSIGHT_TEST_ORTHANC_URL must name a running Orthanc with DICOMweb; scripts/test.sh starts one")
}

/// The test PACS's user and password (HTTP basic auth).
pub fn orthanc_credentials() -> (String, String) {
    let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set; scripts/test.sh sets it"));
    (get("RADSIGHT_TEST_ORTHANC_USER"), get("RADSIGHT_TEST_ORTHANC_PASSWORD"))
}

pub fn dicomweb_root() -> String {
    format!("{}/dicom-web", orthanc_url())
}

/// A fresh UID under the UUID-derived root 2.25 (PS3.5 B.2), unique across test runs.
pub fn fresh_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Loads an instance into Orthanc.
pub async fn upload(instance: Vec<u8>) {
    let (user, password) = orthanc_credentials();
    let resp = reqwest::Client::new()
        .post(format!("{}/instances", orthanc_url()))
        .basic_auth(user, Some(password))
        .body(instance)
        .send()
        .await
        .expect("Orthanc is up");
    assert!(resp.status().is_success(), "Orthanc refused the instance: {}", resp.text().await.unwrap_or_default());
}

/// What distinguishes a series, for selection rules.
pub struct SeriesInfo<'a> {
    pub modality: &'a str,
    pub description: &'a str,
}

const OT: SeriesInfo<'static> = SeriesInfo { modality: "OT", description: "test" };

/// A Secondary Capture instance (explicit VR little endian) of `rows`×`rows` 8-bit pixels.
pub fn instance(patient_id: &str, study_uid: &str, series_uid: &str, sop_uid: &str, rows: u16, series: &SeriesInfo) -> Vec<u8> {
    const SOP_CLASS: &[u8] = b"1.2.840.10008.5.1.4.1.1.7";
    let mut meta = Vec::new();
    element(&mut meta, 0x0002, 0x0001, "OB", &[0, 1]);
    element(&mut meta, 0x0002, 0x0002, "UI", SOP_CLASS);
    element(&mut meta, 0x0002, 0x0003, "UI", sop_uid.as_bytes());
    element(&mut meta, 0x0002, 0x0010, "UI", b"1.2.840.10008.1.2.1");
    element(&mut meta, 0x0002, 0x0012, "UI", b"1.2.826.0.1.3680043.10.1");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(&mut out, 0x0002, 0x0000, "UL", &(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    element(&mut out, 0x0008, 0x0016, "UI", SOP_CLASS);
    element(&mut out, 0x0008, 0x0018, "UI", sop_uid.as_bytes());
    element(&mut out, 0x0008, 0x0060, "CS", series.modality.as_bytes());
    element(&mut out, 0x0008, 0x103E, "LO", series.description.as_bytes());
    element(&mut out, 0x0010, 0x0020, "LO", patient_id.as_bytes());
    element(&mut out, 0x0020, 0x000D, "UI", study_uid.as_bytes());
    element(&mut out, 0x0020, 0x000E, "UI", series_uid.as_bytes());
    element(&mut out, 0x0028, 0x0002, "US", &1u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0004, "CS", b"MONOCHROME2");
    element(&mut out, 0x0028, 0x0010, "US", &rows.to_le_bytes());
    element(&mut out, 0x0028, 0x0011, "US", &rows.to_le_bytes());
    element(&mut out, 0x0028, 0x0100, "US", &8u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0101, "US", &8u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0102, "US", &7u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0103, "US", &0u16.to_le_bytes());
    let pixels: Vec<u8> = (0..rows as usize * rows as usize).map(|i| (i % 251) as u8).collect();
    element(&mut out, 0x7FE0, 0x0010, "OB", &pixels);
    out
}

/// Stores a study of `count` instances for `patient_id` in Orthanc and returns its UID.
pub async fn store_study(patient_id: &str, count: usize, rows: u16) -> String {
    let study = fresh_uid();
    store_series(patient_id, &study, &OT, count, rows).await;
    study
}

/// Adds a series of `count` instances to study `study_uid` in Orthanc.
pub async fn store_series(patient_id: &str, study_uid: &str, series: &SeriesInfo<'_>, count: usize, rows: u16) {
    let series_uid = fresh_uid();
    for _ in 0..count {
        upload(instance(patient_id, study_uid, &series_uid, &fresh_uid(), rows, series)).await;
    }
}
