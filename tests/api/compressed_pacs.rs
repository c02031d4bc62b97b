//! End to end with the compressed syntaxes archives keep: a JPEG 2000 DX and a JPEG Lossless
//! (SV1) CR, made from a phantom radiograph by GDCM and DCMTK (installed by the test command),
//! stored in the real Orthanc and announced by ORU, reach stage `analysed` with a card, both
//! when radsight asks for the stored syntax (it decodes the codestream itself) and when it lets
//! Orthanc transcode.

use std::path::Path;
use std::process::Command;

use radsight::analysis::phantom_dicom::{PhantomInstance, clear_nodule_phantom, phantom_part10};
use serde_json::Value;

use crate::analysis::chest_oru;
use crate::dicomweb::app_with_pacs_configured;
use crate::helpers::{Backend, PATIENT, example};
use crate::hl7::MllpClient;
use crate::pacs::{fresh_uid, upload};

/// Runs a DICOM tool; a missing tool fails the test (the test command installs them).
fn run(tool: &str, args: &[&str]) {
    let out =
        Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} must be installed (scripts/test.sh installs it): {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The transfer syntax UID of a Part 10 file (explicit VR meta group):
/// the UID string right after (0002,0010).
fn transfer_syntax(bytes: &[u8]) -> String {
    let at = bytes.windows(4).position(|w| w == [0x02, 0x00, 0x10, 0x00]).expect("a (0002,0010) element");
    let len = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
    String::from_utf8_lossy(&bytes[at + 8..at + 8 + len]).trim_end_matches('\0').to_owned()
}

/// A phantom chest radiograph for `study`, compressed into `syntax` ("j2k" or "jpeg-lossless-sv1"),
/// with modality `modality`.
fn compressed_phantom(dir: &Path, study: &str, syntax: &str, modality: &str) -> Vec<u8> {
    let meta =
        PhantomInstance { patient_id: PATIENT, study_uid: study, series_uid: &fresh_uid(), sop_uid: &fresh_uid(), accession: "ACC-C" };
    let plain = dir.join(format!("{syntax}-plain.dcm"));
    let packed = dir.join(format!("{syntax}.dcm"));
    std::fs::write(&plain, phantom_part10(&meta, 256, 256, &clear_nodule_phantom(256).image.into_data())).unwrap();
    let (p, o) = (plain.to_str().unwrap(), packed.to_str().unwrap());
    match syntax {
        "j2k" => run("gdcmconv", &["--j2k", p, o]),
        _ => run("dcmcjpeg", &["+e1", p, o]),
    }
    run("dcmodify", &["-nb", "-m", &format!("(0008,0060)={modality}"), o]);
    std::fs::read(&packed).unwrap()
}

async fn compressed_studies_are_analysed(backend: Backend, asked: &str) {
    let ts = asked.to_owned();
    let app = app_with_pacs_configured(backend, 64 * 1024 * 1024, move |s| s.dicomweb.transfer_syntax = ts).await;
    let dir = tempfile::tempdir().unwrap();
    for (i, (syntax, modality, uid_prefix)) in
        [("j2k", "DX", "1.2.840.10008.1.2.4.9"), ("jpeg-lossless-sv1", "CR", "1.2.840.10008.1.2.4.70")].into_iter().enumerate()
    {
        let study = fresh_uid();
        let instance = compressed_phantom(dir.path(), &study, syntax, modality);
        assert!(transfer_syntax(&instance).starts_with(uid_prefix), "{syntax}: {}", transfer_syntax(&instance));
        upload(instance).await;
        let mut client = MllpClient::connect(&app).await;
        assert_eq!(client.send(&chest_oru(&format!("C{i}-{syntax}"), &study)).await.code(), "AA");
        let jobs = app
            .wait_for_jobs("the study to be analysed", |j| {
                j.len() == i + 1 && j.iter().all(|j| matches!(j.state.as_str(), "succeeded" | "dead"))
            })
            .await;
        let job = jobs.iter().find(|j| j.study_uid == study).unwrap();
        assert_eq!(
            (job.state.as_str(), job.stage.as_deref()),
            ("succeeded", Some("analysed")),
            "{syntax} asked {asked}: {:?}",
            job.last_error
        );
    }
    let wado: Vec<Value> = app
        .audit_of("dicomweb.fetch")
        .await
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .filter(|d| d["operation"] == "wado-rs")
        .collect();
    assert_eq!(wado.len(), 2);
    if asked == "*" {
        assert!(wado.iter().all(|d| d["result"]["transfer_syntax"] == "*"), "{wado:?}");
    }
    let cards = app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    let ai = cards.iter().filter(|c| c["summary"].as_str().unwrap_or_default().starts_with("AI:")).count();
    assert!(ai >= 2, "a card for each analysed study: {cards:#?}");
}

async fn compressed_studies_asked_as_stored_are_decoded_by_radsight(backend: Backend) {
    compressed_studies_are_analysed(backend, "*").await;
}

async fn compressed_studies_transcoded_by_the_pacs_are_analysed(backend: Backend) {
    compressed_studies_are_analysed(backend, "1.2.840.10008.1.2.1").await;
}

backend_tests!(compressed_studies_asked_as_stored_are_decoded_by_radsight, compressed_studies_transcoded_by_the_pacs_are_analysed,);
