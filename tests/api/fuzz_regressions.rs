//! Replays every input under `fuzz/regressions/<target>/` through the fuzz target's own body
//! (`fuzz/src/`, included here), so stable CI keeps checking what the fuzzers once found. The
//! fuzz crate is nightly-only and outside the workspace; its target bodies use only radsight's
//! own dependencies, which is what lets this binary compile them.

#[allow(dead_code, unused_imports)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::Path;

/// A target's name (its directory under `fuzz/corpus/` and `fuzz/regressions/`) and its body.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("hl7_message", fuzz_targets::hl7_message::run),
    ("mllp", fuzz_targets::mllp::run),
    ("multipart", fuzz_targets::multipart::run),
    ("cds_hooks_request", fuzz_targets::cds_hooks_request::run),
    ("fhir", fuzz_targets::fhir::run),
    ("client_jwt", fuzz_targets::client_jwt::run),
];

/// Runs `run` on every file in `fuzz/<dir>/<target>/`; returns how many there were.
fn replay(dir: &str, target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("an input file");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{} fails its fuzz target's checks", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn every_fuzz_regression_input_passes_its_targets_checks() {
    for (target, run) in TARGETS {
        replay("regressions", target, run);
    }
}

#[test]
fn every_fuzz_seed_passes_its_targets_checks() {
    for (target, run) in TARGETS {
        assert!(replay("corpus", target, run) > 0, "no seeds for {target}");
    }
}
