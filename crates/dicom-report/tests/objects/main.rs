//! radsight-dicom-report's objects, read back by dicom-rs and checked by the reference tools:
//! dciodvfy (dicom3tools), dsrdump (DCMTK) and highdicom (Python, `RADSIGHT_TEST_PYTHON`).
//!
//! A missing tool FAILS these tests; nothing is skipped. scripts/test.sh installs them
//! (`ensure_dicom_tools`, and highdicom from tests/python/requirements.txt).
//!
//! Run: `RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python cargo test -p radsight-dicom-report`

mod determinism;
mod fixture;
mod input;
mod round_trip;
mod tools;
