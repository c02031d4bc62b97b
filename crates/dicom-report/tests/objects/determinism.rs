//! Same input, same bytes and UIDs: a retry of the outbox resends the same objects.

use radsight_dicom_report::{Uid, UidRoot, write_measurement_report, write_saliency_capture};

use crate::fixture::*;

fn assert_valid(uid: &Uid) {
    assert!(uid.as_str().len() <= 64, "{uid}");
    Uid::parse(uid.as_str()).unwrap_or_else(|e| panic!("{uid}: {e}"));
}

#[test]
fn the_same_report_gives_identical_bytes_and_uids() {
    for root in [None, Some(UidRoot::parse("1.2.826.0.1.3680043.10.543").unwrap())] {
        let a = write_measurement_report(&report(), root.as_ref()).unwrap();
        let b = write_measurement_report(&report(), root.as_ref()).unwrap();
        assert_eq!(a, b);
        let c = write_saliency_capture(&report(), &overlay(), root.as_ref()).unwrap();
        let d = write_saliency_capture(&report(), &overlay(), root.as_ref()).unwrap();
        assert_eq!(c, d);
        for uid in [&a.sop_instance_uid, &a.series_instance_uid, &c.sop_instance_uid, &c.series_instance_uid] {
            assert_valid(uid);
        }
        // Four different objects and series.
        assert_ne!(a.series_instance_uid, c.series_instance_uid);
        assert_ne!(a.sop_instance_uid, c.sop_instance_uid);
        assert_ne!(a.sop_instance_uid, a.series_instance_uid);
    }
}

#[test]
fn another_result_id_gives_other_uids() {
    let mut other = report();
    other.result_id = "res_01HZX4".into();
    let a = write_measurement_report(&report(), None).unwrap();
    let b = write_measurement_report(&other, None).unwrap();
    assert_ne!(a.sop_instance_uid, b.sop_instance_uid);
    assert_ne!(a.series_instance_uid, b.series_instance_uid);
    let c = write_saliency_capture(&report(), &overlay(), None).unwrap();
    let d = write_saliency_capture(&other, &overlay(), None).unwrap();
    assert_ne!(c.sop_instance_uid, d.sop_instance_uid);
}

#[test]
fn uids_sit_under_the_configured_root_or_2_25() {
    let root = UidRoot::parse("1.2.826.0.1.3680043.10.543").unwrap();
    let org = write_measurement_report(&report(), Some(&root)).unwrap();
    assert!(org.sop_instance_uid.as_str().starts_with("1.2.826.0.1.3680043.10.543."), "{}", org.sop_instance_uid);
    let default = write_measurement_report(&report(), None).unwrap();
    assert!(default.sop_instance_uid.as_str().starts_with("2.25."), "{}", default.sop_instance_uid);
    // The longest root allowed still leaves valid UIDs.
    let long = UidRoot::parse(&format!("1.{}", "9".repeat(radsight_dicom_report::MAX_ROOT_LEN - 2))).unwrap();
    let written = write_measurement_report(&report(), Some(&long)).unwrap();
    assert_valid(&written.sop_instance_uid);
    assert_valid(&written.series_instance_uid);
}

#[test]
fn a_changed_finding_changes_the_bytes_but_not_the_uids() {
    let mut changed = report();
    changed.findings[0].probability = 0.9;
    let a = write_measurement_report(&report(), None).unwrap();
    let b = write_measurement_report(&changed, None).unwrap();
    assert_ne!(a.bytes, b.bytes);
    assert_eq!(a.sop_instance_uid, b.sop_instance_uid);
}
